//! The local state store: a durable copy of each owned partition's per-user state, so that a
//! restart or a re-assignment is warm instead of replaying the whole changelog.
//!
//! The compacted changelog topic is the source of truth; this store is a cache of it that also
//! remembers how far into the changelog it is ([`PartitionMeta::changelog_offset`]). After each
//! processed batch the service calls [`LocalStore::write`] once per partition: the changed keys
//! and the partition's new meta go in one atomic write, so a reader never sees keys of one batch
//! with the offset of another. On assignment, [`LocalStore::load_partition`] returns the whole
//! key set plus its meta, and the caller replays the changelog from the stored offset and checks
//! the result against the changelog's last checkpoint (`changelog.rs`): a store that lost files
//! (a partition's directory, its manifest) still opens cleanly, just with fewer keys. When
//! [`LocalStore::open`] (or any later call) reports [`StoreError::Damaged`], the caller
//! [`LocalStore::destroy`]s the store and restores wholly from the changelog.
//!
//! # Engine
//!
//! [fjall] 2.x (a pure-Rust LSM tree), in `<dir>/state.fjall/`. It was measured against `redb`
//! 2.6 on the 2-core target with 200,000 keys of 120-byte values in atomic batches of 2,000:
//! fjall wrote 80–130k keys/s (redb 17–37k, its B-tree copy-on-write dominating), scanned
//! 0.5–1.2M keys/s (redb ~2M) and took 250–410 bytes/key on disk (redb 340). Writing after every
//! batch is the hot path and loading happens only on assignment, so the faster writer won.
//! (fjall 2.x and redb 2.x are the newest lines that build on this crate's `rust-version`.)
//!
//! Layout: one fjall partition per Kafka partition (`p<N>`), holding the user keys verbatim, and
//! one `meta` partition keyed by the Kafka partition number (big-endian `i32`) holding each
//! partition's encoded [`PartitionMeta`]. A fjall write batch spans partitions atomically.
//!
//! # Durability
//!
//! Every write is flushed to the OS at commit (`PersistMode::Buffer`) but not fsynced. fjall
//! frames each batch in its journal with a start marker, an item count and a checksum, and on
//! recovery discards a torn tail batch: after a process crash nothing is lost, and after an OS
//! crash or power loss the store comes back as of some earlier batch, never half a batch. The
//! meta of that batch carries its own changelog offset, so the changelog replay on assignment
//! re-applies whatever the lost tail held. Per-commit fsync would buy nothing the changelog does
//! not already give.
//!
//! # Use
//!
//! One `LocalStore` per service and input topic, used from one thread (it is `Send`). Only one
//! process may open a directory at a time; the caller gives each instance its own directory.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

/// The store's directory name under the service's state directory.
const STORE_DIR: &str = "state.fjall";
/// Beside the store: written when a partition's copy was too damaged to clear
/// ([`LocalStore::condemn`]); the next [`LocalStore::open`] reports the store as damaged, so the
/// caller destroys it and restores wholly from the changelog.
const CONDEMNED: &str = "state.fjall.condemned";

/// The fjall partition that holds every Kafka partition's [`PartitionMeta`].
const META_PARTITION: &str = "meta";

/// Version byte of the encoded [`PartitionMeta`], so its layout can change without a silent
/// misread of an old store.
const META_VERSION: u8 = 1;

/// fjall rejects (by panicking) keys longer than this, so `write` checks it first.
const MAX_KEY_BYTES: usize = u16::MAX as usize;

/// The least journal the store lets build up before it seals its memtables (see
/// [`LocalStore::write`]): below this, sealing would only make many tiny table files.
const MIN_SEAL_BYTES: u64 = 1024 * 1024;

/// Metadata stored with each partition's state, written atomically with it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PartitionMeta {
    /// Offset of the last changelog record this local copy reflects (-1 = none).
    pub changelog_offset: i64,
    /// Opaque service-specific bytes (input position, partition clock), encoded by the caller.
    pub app: Vec<u8>,
}

impl PartitionMeta {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.app.len());
        out.push(META_VERSION);
        out.extend_from_slice(&self.changelog_offset.to_be_bytes());
        out.extend_from_slice(&self.app);
        out
    }

    fn decode(bytes: &[u8]) -> Option<PartitionMeta> {
        let (&version, rest) = bytes.split_first()?;
        if version != META_VERSION || rest.len() < 8 {
            return None;
        }
        let (offset, app) = rest.split_at(8);
        Some(PartitionMeta {
            changelog_offset: i64::from_be_bytes(offset.try_into().ok()?),
            app: app.to_vec(),
        })
    }
}

/// A partition as [`LocalStore::load_partition`] returns it: its meta (`None` if never written)
/// and every key with its value, in key order.
pub type PartitionContents = (Option<PartitionMeta>, Vec<(String, Vec<u8>)>);

/// The operation that failed, so an error says what the service was doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Open,
    Destroy,
    Load(i32),
    Write(i32),
    Clear(i32),
    Stats(i32),
    DiskBytes,
    Flush,
    Condemn,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Open => f.write_str("open"),
            Op::Destroy => f.write_str("destroy"),
            Op::Load(p) => write!(f, "load partition {p}"),
            Op::Write(p) => write!(f, "write partition {p}"),
            Op::Clear(p) => write!(f, "clear partition {p}"),
            Op::Stats(p) => write!(f, "stats of partition {p}"),
            Op::DiskBytes => f.write_str("measure disk use"),
            Op::Flush => f.write_str("flush to tables"),
            Op::Condemn => f.write_str("mark for rebuilding"),
        }
    }
}

/// A local store failure. [`StoreError::Damaged`] means the files cannot be trusted or opened:
/// destroy the store and restore from the changelog. The other variants are about the
/// environment or the call, where destroying the store would not help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("local state store {path} is damaged ({op}): {detail}")]
    Damaged {
        path: PathBuf,
        op: Op,
        detail: String,
    },
    #[error("local state store {path}: {op} failed: {source}")]
    Io {
        path: PathBuf,
        op: Op,
        #[source]
        source: io::Error,
    },
    /// The engine refused for a reason that is neither damage nor I/O (an engine bug or misuse).
    #[error("local state store {path}: {op} failed: {detail}")]
    Engine {
        path: PathBuf,
        op: Op,
        detail: String,
    },
    /// A key the engine cannot store (empty or longer than 65,535 bytes); nothing was written.
    #[error("local state store {path}: {op} rejected a key of {len} bytes (allowed: 1 to 65535)")]
    InvalidKey { path: PathBuf, op: Op, len: usize },
}

impl StoreError {
    /// Whether the caller should destroy the store and restore from the changelog.
    pub fn is_damaged(&self) -> bool {
        matches!(self, StoreError::Damaged { .. })
    }

    /// Classifies an engine error. At open every failure that is not plainly the environment's
    /// (permissions, full disk) counts as damage: the store cannot be used, and a fresh one
    /// restored from the changelog can.
    fn from_fjall(path: &Path, op: Op, err: fjall::Error) -> StoreError {
        let path = path.to_path_buf();
        let io_err = match err {
            fjall::Error::Io(e) | fjall::Error::Storage(fjall::LsmError::Io(e)) => e,
            fjall::Error::Encode(_) | fjall::Error::PartitionDeleted => {
                return StoreError::Engine {
                    path,
                    op,
                    detail: err.to_string(),
                }
            }
            // Checksums, decoding, versions, journal recovery, and a keyspace poisoned by a
            // failed flush (its on-disk state is no longer guaranteed).
            other => {
                return StoreError::Damaged {
                    path,
                    op,
                    detail: other.to_string(),
                }
            }
        };
        let environmental = matches!(
            io_err.kind(),
            io::ErrorKind::PermissionDenied
                | io::ErrorKind::StorageFull
                | io::ErrorKind::ReadOnlyFilesystem
                | io::ErrorKind::OutOfMemory
                | io::ErrorKind::Interrupted
        );
        let corrupt = matches!(
            io_err.kind(),
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
        );
        if corrupt || (op == Op::Open && !environmental) {
            StoreError::Damaged {
                path,
                op,
                detail: io_err.to_string(),
            }
        } else {
            StoreError::Io {
                path,
                op,
                source: io_err,
            }
        }
    }
}

/// What fjall asserts of `<store>/journals` at open (it panics otherwise): every entry a
/// regular file named by a number, optionally with `.sealed` (`.DS_Store` and `._*` are
/// skipped). Anything else there is damage naming the entry (an outside check put a directory,
/// then a link to `/dev/zero`, in place of a journal file: every start panicked).
fn check_journals(store: &Path) -> Result<(), StoreError> {
    let journals = store.join("journals");
    let damaged = |detail: String| StoreError::Damaged {
        path: store.to_path_buf(),
        op: Op::Open,
        detail,
    };
    let entries = match std::fs::read_dir(&journals) {
        Ok(entries) => entries,
        // Something else where the directory should be.
        Err(e) if std::fs::symlink_metadata(&journals).is_ok_and(|m| !m.is_dir()) => {
            return Err(damaged(format!("{}: {e}", journals.display())))
        }
        // Missing (a new store), or not readable (permissions): fjall's own open says what.
        Err(_) => return Ok(()),
    };
    for entry in entries {
        let entry = entry.map_err(|e| damaged(format!("{}: {e}", journals.display())))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == ".DS_Store" || name.starts_with("._") {
            continue;
        }
        let file = entry.file_type().is_ok_and(|t| t.is_file());
        let numbered = name
            .strip_suffix(".sealed")
            .unwrap_or(&name)
            .parse::<u64>()
            .is_ok();
        if !file || !numbered {
            return Err(damaged(format!(
                "{} is not a journal file (a regular file named by a number)",
                entry.path().display()
            )));
        }
    }
    Ok(())
}

/// The durable local copy of all owned partitions' state of one service and input topic.
pub struct LocalStore {
    /// `<dir>/state.fjall`, named in every error.
    path: PathBuf,
    keyspace: Keyspace,
    meta: PartitionHandle,
    /// Key and value bytes written since the memtables were last sealed: what the journal
    /// holds that no table file does yet.
    unsealed: AtomicU64,
}

impl LocalStore {
    /// Opens (creating) the store under `dir` (one database for all partitions of one service and
    /// topic, in `<dir>/state.fjall/`). A damaged or unreadable store is
    /// [`StoreError::Damaged`] naming the path.
    pub fn open(dir: &Path) -> Result<LocalStore, StoreError> {
        let path = dir.join(STORE_DIR);
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: path.clone(),
            op: Op::Open,
            source,
        })?;
        if dir.join(CONDEMNED).exists() {
            return Err(StoreError::Damaged {
                path,
                op: Op::Open,
                detail: format!(
                    "condemned by the last run ({CONDEMNED}): a partition's copy could not be \
                     read or cleared"
                ),
            });
        }
        check_journals(&path)?;
        let fail = |e| StoreError::from_fjall(&path, Op::Open, e);
        // fjall asserts what it expects of its files rather than returning an error; a panic
        // there is damage too (the check above covers the cases known).
        let opened = std::panic::catch_unwind(|| {
            let keyspace = Config::new(&path).open()?;
            let meta =
                keyspace.open_partition(META_PARTITION, PartitionCreateOptions::default())?;
            Ok((keyspace, meta))
        });
        let (keyspace, meta) = match opened {
            Ok(opened) => opened.map_err(fail)?,
            Err(panic) => {
                let detail = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                return Err(StoreError::Damaged {
                    path,
                    op: Op::Open,
                    detail: format!("the store engine gave up opening it: {detail}"),
                });
            }
        };
        Ok(LocalStore {
            path,
            keyspace,
            meta,
            unsealed: AtomicU64::new(0),
        })
    }

    /// Deletes the store files under `dir` (used after a damaged open); `open` then starts
    /// empty. Other files in `dir` are left alone. The store must not be open.
    pub fn destroy(dir: &Path) -> Result<(), StoreError> {
        let path = dir.join(STORE_DIR);
        let result = match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            // A damaged store may even be a plain file where the directory should be.
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
        };
        result.map_err(|source| StoreError::Io {
            path,
            op: Op::Destroy,
            source,
        })?;
        let marker = dir.join(CONDEMNED);
        match std::fs::remove_file(&marker) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::Io {
                path: marker,
                op: Op::Destroy,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Writes every memtable out to table files and waits for it (the store does that on its
    /// own as the journal grows, [`LocalStore::write`]): for tests that damage table files.
    pub fn flush_to_tables(&self) -> Result<(), StoreError> {
        for name in self.keyspace.list_partitions() {
            self.keyspace
                .open_partition(&name, PartitionCreateOptions::default())
                .and_then(|part| part.rotate_memtable_and_wait())
                .map_err(|e| self.err(Op::Flush, e))?;
        }
        Ok(())
    }

    /// Marks the store for rebuilding at the next [`LocalStore::open`]: for a partition whose
    /// copy cannot even be cleared (a damaged data block, which fjall reads only when the keys
    /// are: the store opens fine, and every restore of the partition failed on it, a crash
    /// loop). Its copy is not used meanwhile (every load of it fails), and writes to it still
    /// work.
    pub fn condemn(&self) -> Result<(), StoreError> {
        let dir = self.path.parent().unwrap_or(&self.path);
        let marker = dir.join(CONDEMNED);
        std::fs::write(&marker, b"").map_err(|source| StoreError::Io {
            path: marker,
            op: Op::Condemn,
            source,
        })
    }

    /// Every key and value of partition `p`, and its meta (`None` if the partition was never
    /// written or was cleared).
    pub fn load_partition(&self, p: i32) -> Result<PartitionContents, StoreError> {
        let op = Op::Load(p);
        let meta = self.read_meta(p, op)?;
        let Some(part) = self.existing_partition(p, op)? else {
            return Ok((meta, Vec::new()));
        };
        let mut entries = Vec::new();
        for item in part.iter() {
            let (key, value) = item.map_err(|e| self.err(op, e))?;
            let key = String::from_utf8(key.to_vec()).map_err(|_| StoreError::Damaged {
                path: self.path.clone(),
                op,
                detail: "a key is not UTF-8 (only user ids are ever written)".to_owned(),
            })?;
            entries.push((key, value.to_vec()));
        }
        Ok((meta, entries))
    }

    /// One atomic write: puts (`Some`) and deletes (`None`) of keys of partition `p`, and its new
    /// meta. If a key appears more than once, its last change wins. Keys must be 1 to 65,535
    /// bytes; otherwise nothing is written.
    pub fn write(
        &self,
        p: i32,
        changes: &[(&str, Option<&[u8]>)],
        meta: &PartitionMeta,
    ) -> Result<(), StoreError> {
        let op = Op::Write(p);
        if let Some((key, _)) = changes
            .iter()
            .find(|(k, _)| k.is_empty() || k.len() > MAX_KEY_BYTES)
        {
            return Err(StoreError::InvalidKey {
                path: self.path.clone(),
                op,
                len: key.len(),
            });
        }
        let part = self
            .keyspace
            .open_partition(&partition_name(p), PartitionCreateOptions::default())
            .map_err(|e| self.err(op, e))?;
        // Entries of one batch share a sequence number, so two changes to one key in the same
        // batch would have no defined order: keep only the last.
        let mut seen = HashSet::with_capacity(changes.len());
        let mut batch = self.keyspace.batch().durability(Some(PersistMode::Buffer));
        for (key, value) in changes.iter().rev() {
            if !seen.insert(*key) {
                continue;
            }
            match value {
                Some(v) => batch.insert(&part, key.as_bytes(), *v),
                None => batch.remove(&part, key.as_bytes()),
            }
        }
        let written: usize = changes
            .iter()
            .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len))
            .sum();
        batch.insert(&self.meta, p.to_be_bytes(), meta.encode());
        batch.commit().map_err(|e| self.err(op, e))?;
        self.seal_when_due(written as u64)
            .map_err(|e| self.err(op, e))
    }

    /// Keeps the journal a fraction of the state. fjall deletes a journal file only once every
    /// partition's memtable holding writes from it has been flushed to a table file, and a
    /// memtable is flushed when it reaches 16 MiB or the journals reach 512 MiB. The `meta`
    /// partition gets one small write per batch, so its memtable never fills: on its own it
    /// pinned every journal until the 512 MiB limit, and the store took 4.6 times the state on
    /// disk (issue 14). So once the bytes written since the last seal reach a quarter of the
    /// table files' size (at least [`MIN_SEAL_BYTES`]), every memtable is sealed; fjall's flush
    /// workers write them out in the background and the journals behind them are deleted. The
    /// cost is more, smaller table files for compaction to merge. Measured with the seed
    /// canvas's states (docs/operations.md, "Local store"): a half made the disk 1.8 times the
    /// state at 200,000 users, a quarter 1.1 to 1.4 times (runs vary with when compactions
    /// ran), an eighth no better.
    fn seal_when_due(&self, written: u64) -> fjall::Result<()> {
        let unsealed = self.unsealed.fetch_add(written, Ordering::Relaxed) + written;
        if unsealed < MIN_SEAL_BYTES {
            return Ok(());
        }
        if unsealed < self.table_bytes() / 4 {
            return Ok(());
        }
        for name in self.keyspace.list_partitions() {
            self.keyspace
                .open_partition(&name, PartitionCreateOptions::default())?
                .rotate_memtable()?;
        }
        self.unsealed.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// The table files' size as fjall counts it: what the keyspace takes on disk less its
    /// journal. It includes old versions that compaction has yet to merge away, so it swings
    /// with when compactions run (several times the state while keys are being rewritten).
    fn table_bytes(&self) -> u64 {
        self.keyspace
            .disk_space()
            .saturating_sub(self.keyspace.journal_disk_space())
    }

    /// Removes partition `p`'s keys and meta in one atomic write (a partition restored wholly
    /// from the changelog starts clean). It writes a tombstone per key, which is fine for an
    /// operation that only follows a damaged or stale copy.
    pub fn clear_partition(&self, p: i32) -> Result<(), StoreError> {
        let op = Op::Clear(p);
        let mut batch = self.keyspace.batch().durability(Some(PersistMode::Buffer));
        if let Some(part) = self.existing_partition(p, op)? {
            for item in part.keys() {
                let key = item.map_err(|e| self.err(op, e))?;
                batch.remove(&part, key);
            }
        }
        batch.remove(&self.meta, p.to_be_bytes());
        batch.commit().map_err(|e| self.err(op, e))
    }

    /// (number of keys, total key+value bytes) of partition `p`, for metrics. It scans the
    /// partition, so call it every few seconds at most, not per batch.
    pub fn partition_stats(&self, p: i32) -> Result<(u64, u64), StoreError> {
        let op = Op::Stats(p);
        let Some(part) = self.existing_partition(p, op)? else {
            return Ok((0, 0));
        };
        let (mut keys, mut bytes) = (0u64, 0u64);
        for item in part.iter() {
            let (key, value) = item.map_err(|e| self.err(op, e))?;
            keys += 1;
            bytes += (key.len() + value.len()) as u64;
        }
        Ok((keys, bytes))
    }

    /// Bytes the store takes on disk: the blocks allocated to every file under its directory,
    /// journal included (as `du` counts: fjall sizes each new journal file to 32 MiB up front,
    /// but as a sparse file that holds only what was written).
    pub fn disk_bytes(&self) -> Result<u64, StoreError> {
        dir_bytes(&self.path).map_err(|source| StoreError::Io {
            path: self.path.clone(),
            op: Op::DiskBytes,
            source,
        })
    }

    fn read_meta(&self, p: i32, op: Op) -> Result<Option<PartitionMeta>, StoreError> {
        let Some(bytes) = self
            .meta
            .get(p.to_be_bytes())
            .map_err(|e| self.err(op, e))?
        else {
            return Ok(None);
        };
        PartitionMeta::decode(&bytes)
            .map(Some)
            .ok_or_else(|| StoreError::Damaged {
                path: self.path.clone(),
                op,
                detail: format!("partition {p} meta record is unreadable"),
            })
    }

    /// The partition's handle if it was ever written, without creating an empty one on disk.
    fn existing_partition(&self, p: i32, op: Op) -> Result<Option<PartitionHandle>, StoreError> {
        let name = partition_name(p);
        if !self.keyspace.partition_exists(&name) {
            return Ok(None);
        }
        self.keyspace
            .open_partition(&name, PartitionCreateOptions::default())
            .map(Some)
            .map_err(|e| self.err(op, e))
    }

    fn err(&self, op: Op, e: fjall::Error) -> StoreError {
        StoreError::from_fjall(&self.path, op, e)
    }
}

/// The fjall partition of Kafka partition `p` (names allow `[a-zA-Z0-9_#$-]`).
fn partition_name(p: i32) -> String {
    format!("p{p}")
}

/// Bytes allocated to the files under `path` (blocks of 512 bytes, as `du` counts, so a sparse
/// file counts what it holds, not its length); files that vanish mid-walk (compaction) are
/// skipped.
fn dir_bytes(path: &Path) -> io::Result<u64> {
    let mut total = 0;
    let entries = match std::fs::read_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        other => other?,
    };
    for entry in entries {
        let entry = entry?;
        let meta = match entry.metadata() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            other => other?,
        };
        if meta.is_dir() {
            total += dir_bytes(&entry.path())?;
        } else {
            total += meta.blocks() * 512;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests;
