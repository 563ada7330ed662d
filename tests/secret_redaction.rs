//! No secret in any error: a misspelt credential property (`LEADSCORE__KAFKA__SASL_PASWORD`)
//! stops either service with an error that names the property and never shows its value, in
//! either log format.

mod common;

use common::*;
use std::process::Command;

const TYPO_SECRET: &str = "hunter2-typo-c0ffee";

fn run(command: &str, log_format: &str, dir: &TempDir) -> std::process::Output {
    let port = free_port();
    Command::new(BIN)
        .arg(command)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // Nothing listens there: the services stop on the configuration first.
        .env("LEADSCORE__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
        .env("LEADSCORE__KAFKA__SASL_PASWORD", TYPO_SECRET)
        .env("LEADSCORE__LOG__FORMAT", log_format)
        .env("LEADSCORE__LOG__LEVEL", "debug")
        .env("LEADSCORE__ADMIN__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "LEADSCORE__SCORER__RULES",
            rules_path("seed-canvas.toml").display().to_string(),
        )
        .env(
            "LEADSCORE__SCORER__STATE_DIR",
            dir.path().join("s").display().to_string(),
        )
        .env(
            "LEADSCORE__HANDOFF__STATE_DIR",
            dir.path().join("h").display().to_string(),
        )
        .env("LEADSCORE__SALESFORCE__CLIENT_ID", "leadscore-dev")
        .env("LEADSCORE_SALESFORCE_CLIENT_SECRET", "not-the-point")
        .output()
        .expect("run leadscore")
}

#[test]
fn a_misspelt_password_property_is_named_but_its_value_never_printed() {
    let dir = TempDir::new("typo");
    for command in ["score", "handoff"] {
        for format in ["human", "json"] {
            let out = run(command, format, &dir);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                !out.status.success(),
                "{command} ({format}) started with an unknown property:\n{stderr}"
            );
            assert!(
                stderr.contains("sasl.pasword"),
                "{command} ({format}): the error does not name the property:\n{stderr}"
            );
            assert!(
                !stderr.contains(TYPO_SECRET) && !stdout.contains(TYPO_SECRET),
                "{command} ({format}) printed the value:\n{stderr}{stdout}"
            );
        }
    }
}
