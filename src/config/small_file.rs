//! Reading a small file an operator names (a rules file, a settings file, a secret, a token
//! list) with a bound on its size **and on the time it takes**.
//!
//! A size cap alone (`take(max + 1)`) stops `/dev/zero` and a wrong path to a log, but not a
//! path that never ends the read: a named pipe with no writer blocks `open` until one comes, one
//! whose writer never closes blocks `read`, and so does a terminal. Such a path held a service's
//! start (SIGTERM included, before the admin port was up) for as long as nothing came. Here the
//! file is opened without blocking, and a read that has to wait ends after [`WAIT`] with an
//! error that says so; a pipe that delivers nothing (no writer: `mkfifo` and nobody writing) is
//! an error too, never an empty file. A regular file reads exactly as before.

use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long reading one small file may wait for data that does not come.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long to sleep between two reads of a pipe that had nothing yet.
const POLL: Duration = Duration::from_millis(10);

/// The file's bytes, at most `max + 1` of them (one past the cap tells "larger than the cap"
/// from "exactly at it": the caller checks). Errors name the reason: as `open`/`read` give it,
/// "it is a directory", [`io::ErrorKind::TimedOut`] for a pipe or device that does not end
/// within [`WAIT`], or [`io::ErrorKind::UnexpectedEof`] for a pipe that ended with nothing in
/// it.
pub fn read_capped(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    read_capped_within(path, max, WAIT)
}

/// [`read_capped`] with its wait given.
pub fn read_capped_within(path: &Path, max: u64, wait: Duration) -> io::Result<Vec<u8>> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        /// `O_NONBLOCK` on Linux (every architecture Rust supports there but alpha, sparc and
        /// parisc, which it does not build this for): `open` of a pipe with no writer returns
        /// at once, and a read with nothing to give says so instead of waiting.
        const O_NONBLOCK: i32 = 0o4000;
        options.custom_flags(O_NONBLOCK);
    }
    let mut file = options.open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(io::Error::other("it is a directory"));
    }
    let pipe = is_pipe(&meta);
    let deadline = Instant::now() + wait;
    let limit = usize::try_from(max.saturating_add(1)).unwrap_or(usize::MAX);
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 8192];
    while bytes.len() < limit {
        let room = (limit - bytes.len()).min(chunk.len());
        match file.read(&mut chunk[..room]) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "nothing more to read after {} s: a pipe or device that does not end, not a file",
                            wait.as_secs_f64()
                        ),
                    ));
                }
                std::thread::sleep(POLL);
            }
            Err(e) => return Err(e),
        }
    }
    if pipe && bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "a pipe with nothing in it (a named pipe with no writer?), not a file",
        ));
    }
    Ok(bytes)
}

#[cfg(unix)]
fn is_pipe(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_fifo()
}

#[cfg(not(unix))]
fn is_pipe(_: &std::fs::Metadata) -> bool {
    false
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    fn fifo(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("leadscore-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap_or_else(|e| panic!("mkfifo: {e}"));
        assert!(made.success(), "mkfifo {}", path.display());
        path
    }

    #[test]
    fn a_regular_file_reads_whole_and_capped_one_byte_past_the_cap() {
        let path = std::env::temp_dir().join(format!("leadscore-small-{}", std::process::id()));
        std::fs::write(&path, b"0123456789").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_capped(&path, 10).ok(), Some(b"0123456789".to_vec()));
        assert_eq!(read_capped(&path, 4).ok(), Some(b"01234".to_vec()));
        std::fs::write(&path, b"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_capped(&path, 4).ok(),
            Some(Vec::new()),
            "an empty file is empty"
        );
        let _ = std::fs::remove_file(&path);
        let zero = read_capped(Path::new("/dev/zero"), 100).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(zero.len(), 101);
    }

    /// Before this module, `open` of a named pipe with no writer blocked until one came.
    #[test]
    fn a_named_pipe_with_no_writer_is_an_error_at_once() {
        let path = fifo("no-writer");
        let started = Instant::now();
        let err =
            read_capped_within(&path, 100, Duration::from_secs(30)).expect_err("nothing to read");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        assert!(err.to_string().contains("no writer"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "did not wait for a writer"
        );
    }

    /// A writer that holds the pipe open without ever closing it: the read ends at the wait;
    /// one that writes and then closes: its bytes, whole. (The writer opens the pipe for
    /// reading and writing, which does not wait for a reader, so the order is the test's.)
    #[test]
    fn a_pipe_that_never_ends_times_out_and_one_that_ends_reads_whole() {
        let path = fifo("slow-writer");
        let open_writer = |path: &Path| {
            let mut w = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap_or_else(|e| panic!("{e}"));
            w.write_all(b"part").unwrap_or_else(|e| panic!("{e}"));
            w
        };
        let held = open_writer(&path);
        let err = read_capped_within(&path, 100, Duration::from_millis(300))
            .expect_err("the writer never closes");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().contains("does not end"), "{err}");
        drop(held);

        let w = open_writer(&path);
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            drop(w);
        });
        let got = read_capped_within(&path, 100, Duration::from_secs(10));
        closer.join().unwrap_or_else(|_| panic!("closer"));
        assert_eq!(got.ok(), Some(b"part".to_vec()));
    }
}
