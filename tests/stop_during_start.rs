//! SIGTERM while a service is still starting (no broker answers yet) ends it at once: nothing
//! was processed, so there is nothing to finish. Found by an outside check: the start's own
//! waits (30-60 s) ran out first, longer than a short grace period.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn a_stop_while_no_broker_answers_ends_the_start_at_once() {
    let dir = TempDir::new("stop-during-start");
    for (command, extra) in [
        (
            "score",
            vec![("SCORER__RULES", rules_path("seed-canvas.toml"))],
        ),
        ("handoff", vec![]),
    ] {
        let admin = free_port();
        let mut env = settings_env(&[
            ("KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1"),
            ("ADMIN__LISTEN", &format!("127.0.0.1:{admin}")),
            (
                "SCORER__STATE_DIR",
                &dir.path()
                    .join(format!("{command}-scorer"))
                    .display()
                    .to_string(),
            ),
            (
                "HANDOFF__STATE_DIR",
                &dir.path()
                    .join(format!("{command}-handoff"))
                    .display()
                    .to_string(),
            ),
        ]);
        for (key, path) in &extra {
            env.extend(settings_env(&[(key, &path.display().to_string())]));
        }
        if command == "handoff" {
            env.extend(settings_env(&[
                ("SALESFORCE__INSTANCE_URL", "http://127.0.0.1:1"),
                ("SALESFORCE__CLIENT_ID", "leadscore-test"),
            ]));
            env.push((
                "LEADSCORE_SALESFORCE_CLIENT_SECRET".into(),
                "a-secret-for-the-test".into(),
            ));
        }
        let log = dir.path().join(format!("{command}.log"));
        let mut service = Service::spawn(command, &env, admin, log);
        wait_until(Duration::from_secs(20), "the admin port", || {
            service.get("/healthz").is_some()
        });
        let signalled = Instant::now();
        let status = service.terminate();
        let took = signalled.elapsed();
        assert!(
            status.success(),
            "{command}: {status}: {}",
            service.log_text()
        );
        // The guard that tells the two apart: the old start waited 30 s and more.
        assert!(
            took < Duration::from_secs(15),
            "{command}: {took:?}: {}",
            service.log_text()
        );
        assert!(
            service.log_text().contains("stopped during the start"),
            "{command}: {}",
            service.log_text()
        );
    }
}
