//! `leadscore rules check` as a user runs it: exit status with and without `--strict`, warnings
//! on stderr with file, line and key, and files that must be refused at once (`/dev/zero`, a
//! directory, a named pipe nobody writes to), also when the scorer is pointed at them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn leadscore() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leadscore"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for `child`, killing it if it runs for a minute: a guard so a regression (reading
/// `/dev/zero` forever) fails the test instead of hanging the suite. Not a timing assertion.
fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "still running after a minute; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn check(args: &[&str]) -> Output {
    finish(
        leadscore()
            .args(["rules", "check"])
            .args(args)
            .spawn()
            .expect("run leadscore"),
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A rules file in this test binary's scratch directory.
fn rules_file(name: &str, text: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).expect("write the rules file");
    path
}

/// A named pipe with no writer in this test binary's scratch directory: opening it for reading
/// waited for a writer, forever (before `small_file`).
fn fifo(name: &str) -> String {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_file(&path);
    let made = Command::new("mkfifo").arg(&path).status().expect("mkfifo");
    assert!(made.success(), "mkfifo {}", path.display());
    path.to_str().expect("UTF-8").to_string()
}

#[test]
fn warnings_exit_zero_unless_strict() {
    let path = rules_file(
        "rules-cli-warnings.toml",
        "[score]\nmin = 5\nmax = 5\n\n[entry]\non = []\n",
    );
    let file = path.to_str().expect("UTF-8 path");

    let out = check(&[file]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(&format!("{file}:3:7: score.max: warning: ")),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!("{file}:6:6: entry.on: warning: ")),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(": ok with 2 warning(s):"), "{stdout}");

    let out = check(&["--strict", file]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 2, "{}", stderr(&out));
}

#[test]
fn strict_passes_files_without_warnings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seed = root.join("examples/rules/seed-canvas.toml");
    let b2b = root.join("examples/rules/b2b-saas.toml");
    let out = check(&[
        "--strict",
        seed.to_str().expect("UTF-8"),
        b2b.to_str().expect("UTF-8"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

#[test]
fn errors_fail_with_or_without_strict() {
    let path = rules_file("rules-cli-error.toml", "[score]\nmin = 6\nmax = 5\n");
    let file = path.to_str().expect("UTF-8 path");
    for args in [vec![file], vec!["--strict", file]] {
        let out = check(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).starts_with(&format!("{file}:3:7: score.max: ")),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn rules_check_refuses_dev_zero_and_a_directory_at_once() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rules");
    let dir = dir.to_str().expect("UTF-8");
    let pipe = fifo("rules-check.fifo");
    for (file, why) in [
        ("/dev/zero", "larger than 1 MiB"),
        (dir, "is a directory"),
        (&pipe, "no writer"),
    ] {
        let out = check(&[file]);
        assert_eq!(out.status.code(), Some(1), "{file}");
        let err = stderr(&out);
        assert!(err.starts_with(&format!("{file}: ")), "{err}");
        assert!(err.contains(why), "{err}");
    }
}

/// The scorer loads its rules before it contacts Kafka, so a bad `scorer.rules` ends it at once
/// with an error naming the file (no broker needed).
#[test]
fn scorer_refuses_dev_zero_and_a_directory_as_rules_at_once() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rules");
    let dir = dir.to_str().expect("UTF-8");
    let pipe = fifo("scorer-rules.fifo");
    for (file, why) in [
        ("/dev/zero", "larger than 1 MiB"),
        (dir, "is a directory"),
        (&pipe, "no writer"),
    ] {
        let child = leadscore()
            .arg("score")
            .env("LEADSCORE__SCORER__RULES", file)
            .env("LEADSCORE__ADMIN__LISTEN", "127.0.0.1:0")
            // Nothing listens here: if the rules loaded, the scorer would fail on Kafka instead,
            // and the message check below would catch it.
            .env("LEADSCORE__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
            .spawn()
            .expect("run leadscore score");
        let out = finish(child);
        assert_ne!(out.status.code(), Some(0), "{file}");
        let err = stderr(&out);
        assert!(err.contains(&format!("rules {file}: {file}: ")), "{err}");
        assert!(err.contains(why), "{err}");
    }
}

/// A reader that leaves early (`... | head`) ends the output, not the report: `simulate` still
/// lists its bad lines on stderr and exits 1 (it exited 0 and said nothing), and `rules check`
/// still exits by the files (it panicked with 101 on the closed pipe). Both write into a
/// closed pipe here.
#[test]
fn a_reader_that_leaves_early_changes_neither_report_nor_status() {
    let dir = std::env::temp_dir().join(format!("leadscore-closed-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let events = dir.join("events.jsonl");
    let mut text = String::new();
    for i in 0..2_000 {
        text.push_str(&format!(
            "{{\"user_id\":\"u{i}\",\"time\":\"2026-01-05T10:00:00Z\",\"type\":\"email_added\",\"value\":\"a@x.io\"}}\n"
        ));
    }
    text.push_str("not json\n");
    std::fs::write(&events, text).expect("events");
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rules/seed-canvas.toml");
    let run = |args: &[&std::ffi::OsStr]| {
        let mut child = leadscore().args(args).spawn().expect("spawn");
        drop(child.stdout.take());
        finish(child)
    };
    let out = run(&[
        "simulate".as_ref(),
        "--rules".as_ref(),
        rules.as_os_str(),
        "--events".as_ref(),
        events.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(":2001: "), "{stderr}");
    let out = run(&["rules".as_ref(), "check".as_ref(), rules.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Found by an outside check: `simulate --partitions 2147483647` allocated 100 GB and aborted;
/// 100,000,000 took 4.7 GB. The count is bounded as the dev-broker's is.
#[test]
fn simulate_refuses_more_partitions_than_a_topic_is_given() {
    let rules = rules_file("partitions-bound.toml", "");
    let out = leadscore()
        .args([
            "simulate",
            "--events",
            "/dev/null",
            "--partitions",
            "2147483647",
        ])
        .arg("--rules")
        .arg(&rules)
        .output()
        .expect("runs");
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not in 1..=10000"), "{stderr}");
}
