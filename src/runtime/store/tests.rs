use super::*;
use crate::dev::scratch::ScratchDir;

/// A fresh scratch directory for one test's store.
fn scratch(name: &str) -> ScratchDir {
    ScratchDir::new(&format!("store-{name}")).unwrap()
}

fn meta(offset: i64, app: &[u8]) -> PartitionMeta {
    PartitionMeta {
        changelog_offset: offset,
        app: app.to_vec(),
    }
}

fn sorted(mut v: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    v.sort();
    v
}

#[test]
fn round_trips_a_partition_with_meta() {
    let dir = scratch("roundtrip");
    let store = LocalStore::open(dir.path()).unwrap();
    assert_eq!(store.load_partition(3).unwrap(), (None, Vec::new()));
    let m = meta(41, b"clock=7");
    store
        .write(
            3,
            &[("u-1", Some(b"one".as_slice())), ("u-2", Some(b"two"))],
            &m,
        )
        .unwrap();
    let (got_meta, entries) = store.load_partition(3).unwrap();
    assert_eq!(got_meta, Some(m));
    assert_eq!(
        sorted(entries),
        vec![
            ("u-1".to_owned(), b"one".to_vec()),
            ("u-2".to_owned(), b"two".to_vec())
        ]
    );
}

#[test]
fn writes_are_atomic_per_batch() {
    let dir = scratch("atomic");
    let store = LocalStore::open(dir.path()).unwrap();
    store
        .write(0, &[("a", Some(b"1".as_slice()))], &meta(10, b""))
        .unwrap();
    store
        .write(
            0,
            &[("a", Some(b"2".as_slice())), ("b", Some(b"3"))],
            &meta(11, b"x"),
        )
        .unwrap();
    // Each load sees the keys of the batch whose meta it returns, never a mix.
    let (m, entries) = store.load_partition(0).unwrap();
    assert_eq!(m, Some(meta(11, b"x")));
    assert_eq!(
        sorted(entries),
        vec![
            ("a".to_owned(), b"2".to_vec()),
            ("b".to_owned(), b"3".to_vec())
        ]
    );
    // A rejected batch leaves neither its keys nor its meta behind.
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    let err = store
        .write(
            0,
            &[("c", Some(b"4".as_slice())), (long.as_str(), Some(b"5"))],
            &meta(12, b""),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidKey { .. }), "{err}");
    let (m, entries) = store.load_partition(0).unwrap();
    assert_eq!(m, Some(meta(11, b"x")));
    assert_eq!(entries.len(), 2);
    // The last change to a key within one batch wins.
    store
        .write(
            0,
            &[
                ("d", Some(b"old".as_slice())),
                ("d", None),
                ("d", Some(b"new")),
            ],
            &meta(13, b""),
        )
        .unwrap();
    let (_, entries) = store.load_partition(0).unwrap();
    assert!(entries.contains(&("d".to_owned(), b"new".to_vec())));
}

#[test]
fn deletes_remove_keys() {
    let dir = scratch("deletes");
    let store = LocalStore::open(dir.path()).unwrap();
    store
        .write(
            1,
            &[("a", Some(b"1".as_slice())), ("b", Some(b"2"))],
            &meta(0, b""),
        )
        .unwrap();
    store
        .write(1, &[("a", None), ("never-there", None)], &meta(1, b""))
        .unwrap();
    let (m, entries) = store.load_partition(1).unwrap();
    assert_eq!(m, Some(meta(1, b"")));
    assert_eq!(entries, vec![("b".to_owned(), b"2".to_vec())]);
}

#[test]
fn partitions_are_isolated() {
    let dir = scratch("isolated");
    let store = LocalStore::open(dir.path()).unwrap();
    store
        .write(1, &[("same", Some(b"one".as_slice()))], &meta(5, b"p1"))
        .unwrap();
    store
        .write(2, &[("same", Some(b"two".as_slice()))], &meta(9, b"p2"))
        .unwrap();
    store
        .write(10, &[("other", Some(b"ten".as_slice()))], &meta(1, b""))
        .unwrap();
    assert_eq!(
        store.load_partition(1).unwrap(),
        (
            Some(meta(5, b"p1")),
            vec![("same".to_owned(), b"one".to_vec())]
        )
    );
    assert_eq!(
        store.load_partition(2).unwrap(),
        (
            Some(meta(9, b"p2")),
            vec![("same".to_owned(), b"two".to_vec())]
        )
    );
    store.write(2, &[("same", None)], &meta(10, b"")).unwrap();
    assert_eq!(store.load_partition(1).unwrap().1.len(), 1);
    assert_eq!(store.load_partition(2).unwrap().1.len(), 0);
    assert_eq!(store.load_partition(7).unwrap(), (None, Vec::new()));
}

#[test]
fn clear_partition_forgets_keys_and_meta() {
    let dir = scratch("clear");
    let store = LocalStore::open(dir.path()).unwrap();
    let changes: Vec<(String, Vec<u8>)> = (0..100)
        .map(|i| (format!("user-{i}"), vec![i as u8; 50]))
        .collect();
    let refs: Vec<(&str, Option<&[u8]>)> = changes
        .iter()
        .map(|(k, v)| (k.as_str(), Some(v.as_slice())))
        .collect();
    store.write(4, &refs, &meta(99, b"a")).unwrap();
    store
        .write(5, &[("keep", Some(b"me".as_slice()))], &meta(3, b""))
        .unwrap();
    store.clear_partition(4).unwrap();
    assert_eq!(store.load_partition(4).unwrap(), (None, Vec::new()));
    assert_eq!(store.partition_stats(4).unwrap(), (0, 0));
    assert_eq!(store.load_partition(5).unwrap().1.len(), 1);
    // Clearing a partition never written is not an error, and a cleared one can be reused.
    store.clear_partition(8).unwrap();
    store
        .write(4, &[("fresh", Some(b"v".as_slice()))], &meta(0, b""))
        .unwrap();
    assert_eq!(
        store.load_partition(4).unwrap(),
        (
            Some(meta(0, b"")),
            vec![("fresh".to_owned(), b"v".to_vec())]
        )
    );
}

#[test]
fn reopen_keeps_everything() {
    let dir = scratch("reopen");
    {
        let store = LocalStore::open(dir.path()).unwrap();
        store
            .write(
                0,
                &[("a", Some(b"1".as_slice())), ("b", Some(b"2"))],
                &meta(20, b"zero"),
            )
            .unwrap();
        store.write(0, &[("b", None)], &meta(21, b"zero")).unwrap();
        store
            .write(6, &[("c", Some(b"3".as_slice()))], &meta(-1, b""))
            .unwrap();
    }
    let store = LocalStore::open(dir.path()).unwrap();
    assert_eq!(
        store.load_partition(0).unwrap(),
        (
            Some(meta(21, b"zero")),
            vec![("a".to_owned(), b"1".to_vec())]
        )
    );
    assert_eq!(
        store.load_partition(6).unwrap(),
        (Some(meta(-1, b"")), vec![("c".to_owned(), b"3".to_vec())])
    );
    assert!(store.disk_bytes().unwrap() > 0);
}

#[test]
fn damaged_file_is_reported_as_damaged() {
    let dir = scratch("damaged");
    {
        let store = LocalStore::open(dir.path()).unwrap();
        store
            .write(0, &[("a", Some(b"1".as_slice()))], &meta(1, b""))
            .unwrap();
    }
    // Overwrite every file of the store with garbage.
    fn scribble(path: &Path) {
        for entry in std::fs::read_dir(path).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                scribble(&entry.path());
            } else {
                std::fs::write(entry.path(), b"\xde\xad\xbe\xef garbage garbage").unwrap();
            }
        }
    }
    scribble(&dir.path().join(STORE_DIR));
    let err = match LocalStore::open(dir.path()) {
        Ok(_) => panic!("a scribbled store opened"),
        Err(e) => e,
    };
    assert!(err.is_damaged(), "{err}");
    assert!(err.to_string().contains(STORE_DIR), "{err}");

    // A plain file where the store directory should be is damage too.
    LocalStore::destroy(dir.path()).unwrap();
    std::fs::write(dir.path().join(STORE_DIR), b"not a directory").unwrap();
    let err = match LocalStore::open(dir.path()) {
        Ok(_) => panic!("a file opened as a store"),
        Err(e) => e,
    };
    assert!(err.is_damaged(), "{err}");

    // Destroy, then open starts empty.
    LocalStore::destroy(dir.path()).unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    assert_eq!(store.load_partition(0).unwrap(), (None, Vec::new()));
}

#[test]
fn disk_bytes_count_the_blocks_a_sparse_file_holds_not_its_length() {
    let dir = scratch("sparse");
    let store = LocalStore::open(dir.path()).unwrap();
    let before = store.disk_bytes().unwrap();
    // As fjall sizes a new journal file.
    let file = std::fs::File::create(store.path.join("sparse")).unwrap();
    file.set_len(64 << 20).unwrap();
    let grown = store.disk_bytes().unwrap() - before;
    assert!(
        grown < 1 << 20,
        "a 64 MiB sparse file counted as {grown} bytes"
    );
}

#[test]
fn the_journal_stays_a_quarter_of_the_tables_however_often_keys_are_rewritten() {
    // 20,000 keys of 250 bytes that do not compress, rewritten ten times in batches of 2,000
    // with a meta write each, as the scorer's checkpoints do: 50 MB through the journal for
    // 5 MB of state. Before the memtables were sealed, the meta partition's never-full
    // memtable kept every journal file, ten times the state.
    let dir = scratch("seal");
    let store = LocalStore::open(dir.path()).unwrap();
    let (keys, len) = (20_000usize, 250usize);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = move |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    // The seal threshold follows the table files' size when each batch is written, and that
    // swings with compaction (30 MB at the end of the writes in one run, 7 MB a minute
    // later), so the bound below takes the largest size the store saw, not the final one.
    let mut tables_seen = 0u64;
    for round in 0..10i64 {
        for batch in 0..keys / 200 {
            let rows: Vec<(String, Vec<u8>)> = (batch * 200..(batch + 1) * 200)
                .map(|k| (format!("user-{k:06}"), noise(len)))
                .collect();
            let changes: Vec<(&str, Option<&[u8]>)> = rows
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_slice())))
                .collect();
            tables_seen = tables_seen.max(store.table_bytes());
            store.write(0, &changes, &meta(round, b"")).unwrap();
        }
    }
    let live = (keys * (len + "user-000000".len())) as u64;
    // fjall flushes sealed memtables in the background and deletes the journal files
    // behind them once that is done; without sealing they stay (50 MB here). The journal may
    // hold what came since the last seal: up to a quarter of the table files as they were
    // then, at least 1 MiB, and the batch that crossed the line with the journal's own
    // framing.
    let journal = || dir_bytes(&store.path.join("journals")).unwrap();
    let bound = tables_seen / 4 + MIN_SEAL_BYTES + 512 * 1024;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while journal() > bound && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let journal = journal();
    assert!(
        journal <= bound,
        "a journal of {journal} bytes beside table files of up to {tables_seen} bytes, for \
         {live} bytes of state, after a minute"
    );
    assert_eq!(store.partition_stats(0).unwrap(), (keys as u64, live));
}

#[test]
fn stats_count_keys_and_bytes() {
    let dir = scratch("stats");
    let store = LocalStore::open(dir.path()).unwrap();
    assert_eq!(store.partition_stats(2).unwrap(), (0, 0));
    store
        .write(
            2,
            &[("ab", Some(b"1234".as_slice())), ("cde", Some(b"5"))],
            &meta(0, b"meta bytes are not counted"),
        )
        .unwrap();
    assert_eq!(store.partition_stats(2).unwrap(), (2, 2 + 4 + 3 + 1));
    store.write(2, &[("ab", None)], &meta(1, b"")).unwrap();
    assert_eq!(store.partition_stats(2).unwrap(), (1, 4));
}

#[test]
fn store_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<LocalStore>();
}

/// A damaged data block is read only when the keys are: the store opens, and loading the
/// partition fails, and so does clearing it (it reads the keys to delete them). Every restore
/// of the partition then failed and the service exited, on every start (an outside review).
/// Condemned, the store opens as damaged next time, so the caller rebuilds it, and a rebuilt
/// store opens clean.
#[test]
fn a_partition_too_damaged_to_clear_condemns_the_store() {
    let dir = scratch("damaged-block");
    {
        let store = LocalStore::open(dir.path()).unwrap();
        let value = vec![b'v'; 200];
        let keys: Vec<String> = (0..3_000).map(|i| format!("user-{i:06}")).collect();
        let changes: Vec<(&str, Option<&[u8]>)> = keys
            .iter()
            .map(|k| (k.as_str(), Some(value.as_slice())))
            .collect();
        store.write(0, &changes, &meta(1, b"")).unwrap();
        store
            .keyspace
            .open_partition("p0", PartitionCreateOptions::default())
            .unwrap()
            .rotate_memtable_and_wait()
            .unwrap();
    }
    // Scribble over the middle of each table file of partition 0: its data blocks.
    let mut damaged = 0;
    let mut stack = vec![dir.path().join(STORE_DIR).join("partitions").join("p0")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.parent().is_some_and(|p| p.ends_with("segments")) {
                let mut bytes = std::fs::read(&path).unwrap();
                let mid = bytes.len() / 3;
                bytes[mid..mid + 256].fill(0xa5);
                std::fs::write(&path, bytes).unwrap();
                damaged += 1;
            }
        }
    }
    assert!(damaged > 0, "no table file written");
    let store = LocalStore::open(dir.path()).expect("opens: blocks are read lazily");
    let load = store.load_partition(0).map(|(m, e)| (m, e.len()));
    assert!(load.as_ref().is_err_and(StoreError::is_damaged), "{load:?}");
    let clear = store.clear_partition(0);
    assert!(
        clear.as_ref().is_err_and(StoreError::is_damaged),
        "{clear:?}"
    );
    // Writes still work meanwhile.
    store
        .write(1, &[("a", Some(b"1".as_slice()))], &meta(2, b""))
        .unwrap();
    store.condemn().unwrap();
    drop(store);
    let err = match LocalStore::open(dir.path()) {
        Ok(_) => panic!("a condemned store opened"),
        Err(e) => e,
    };
    assert!(
        err.is_damaged() && err.to_string().contains("condemned"),
        "{err}"
    );
    LocalStore::destroy(dir.path()).unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    assert_eq!(store.load_partition(0).unwrap(), (None, Vec::new()));
}

/// What the engine asserts of its journal directory (every entry a regular file named by a
/// number) is checked first: a directory, a link or a stray file there made every open panic
/// inside fjall, on every start, naming neither the store nor the file (an outside check).
/// Now the store is damaged, naming the entry, and is rebuilt from the changelog.
#[test]
fn a_journal_entry_that_is_not_a_journal_file_is_damage_not_a_panic() {
    for (case, damage) in [
        (
            "dir",
            &(|p: &Path| std::fs::create_dir(p).unwrap()) as &dyn Fn(&Path),
        ),
        ("link", &|p: &Path| {
            std::os::unix::fs::symlink("/dev/zero", p).unwrap()
        }),
        ("stray", &|p: &Path| {
            std::fs::write(p.with_file_name("notes.txt"), b"x").unwrap();
            std::fs::write(p, b"").unwrap();
        }),
    ] {
        let dir = scratch(&format!("journal-{case}"));
        {
            let store = LocalStore::open(dir.path()).unwrap();
            store
                .write(0, &[("a", Some(b"1".as_slice()))], &meta(10, b""))
                .unwrap();
        }
        let journals = dir.path().join(STORE_DIR).join("journals");
        let first = std::fs::read_dir(&journals)
            .unwrap()
            .map(|e| e.unwrap().path())
            .min()
            .expect("a journal file");
        std::fs::remove_file(&first).unwrap();
        damage(&first);
        let opened = std::panic::catch_unwind(|| LocalStore::open(dir.path()));
        let err = match opened {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => panic!("{case}: opened"),
            Err(_) => panic!("{case}: the open panicked"),
        };
        assert!(err.is_damaged(), "{case}: {err}");
        assert!(err.to_string().contains("journals"), "{case}: {err}");
        LocalStore::destroy(dir.path()).unwrap();
        LocalStore::open(dir.path()).expect("a rebuilt store opens");
    }
}
