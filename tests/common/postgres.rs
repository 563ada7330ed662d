//! A PostgreSQL server of the test's own: `initdb` and `pg_ctl` in a temporary directory, on a
//! free port on 127.0.0.1 with its Unix socket in the same directory, stopped on drop. No system
//! service is needed, only the server binaries (tests/setup installs Debian's `postgresql`).
//!
//! PostgreSQL refuses to run as root: as root, the server runs as `nobody` (through `setpriv`)
//! in a directory handed to it; as any other user, as that user.

use super::{free_port, wait_until, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A running server; `trust` authentication for user `postgres` on 127.0.0.1.
pub struct Postgres {
    pub port: u16,
    dir: TempDir,
    bin: PathBuf,
}

/// The directory of `initdb`: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (the
/// newest), where the `postgresql` package puts it without linking it onto PATH.
fn bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
    {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !path.is_empty() {
            let real = std::fs::canonicalize(&path).unwrap_or_else(|_| PathBuf::from(&path));
            return real.parent().expect("initdb has a directory").to_path_buf();
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run tests/setup (Debian package postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .pop()
        .expect("no initdb under /usr/lib/postgresql: run tests/setup")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Postgres {
    /// initdb, then start; waits until it accepts connections.
    pub fn start(name: &str) -> Postgres {
        let dir = TempDir::new(&format!("pg-{name}"));
        let bin = bin_dir();
        let pg = Postgres {
            port: free_port(),
            dir,
            bin,
        };
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "nobody:nogroup"])
                .arg(pg.dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the server directory to nobody");
        }
        let data = pg.data();
        let out = pg
            .server_command("initdb")
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert_ok(&out, "initdb");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            pg.port,
            pg.dir.path().display()
        );
        let out = pg
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(pg.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl start");
        assert_ok(&out, "pg_ctl start");
        wait_until(
            Duration::from_secs(30),
            "PostgreSQL to accept connections",
            || pg.try_sql("SELECT 1").is_ok(),
        );
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `program` from the server's directory, as the user the server runs as.
    fn server_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if is_root() {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
                .arg(path)
                .current_dir(self.dir.path());
            c
        } else {
            Command::new(path)
        }
    }

    /// The connection string `warehouse.url` takes.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// Runs `sql` with psql; rows as lines, columns separated by `|`.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// [`Postgres::try_sql`], panicking with psql's message.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// `pg_ctl restart -m fast`: every client connection is cut, as in a failover or an
    /// operator's restart; the server comes back on the same port with the same options.
    pub fn restart(&self) {
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-m", "fast", "-w", "-t", "60", "restart"])
            .output()
            .expect("run pg_ctl restart");
        assert_ok(&out, "pg_ctl restart");
        wait_until(
            Duration::from_secs(30),
            "PostgreSQL to accept connections again",
            || self.try_sql("SELECT 1").is_ok(),
        );
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
