//! What tests of the stand-in and of the Salesforce client against it share: a stand-in that
//! stops when dropped, a configuration, faults in one line, lead ids.

use super::{serve, Faults, Standin, StandinConfig};
use crate::config::Secret;
use crate::runtime::shutdown::Shutdown;

/// A stand-in on a free local port, stopped when dropped.
pub(crate) struct TestStandin {
    standin: Standin,
    shutdown: Shutdown,
}

impl TestStandin {
    pub(crate) async fn start(cfg: StandinConfig) -> TestStandin {
        let shutdown = Shutdown::new();
        let (addr, standin) = serve("127.0.0.1:0", cfg, shutdown.clone())
            .await
            .expect("the stand-in starts");
        assert_eq!(standin.instance_url(), format!("http://{addr}"));
        TestStandin { standin, shutdown }
    }
}

impl std::ops::Deref for TestStandin {
    type Target = Standin;

    fn deref(&self) -> &Standin {
        &self.standin
    }
}

impl Drop for TestStandin {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// An org whose connected app is `test-app` with `secret`.
pub(crate) fn config(secret: &str) -> StandinConfig {
    StandinConfig {
        client_id: "test-app".to_string(),
        client_secret: Secret::new(secret),
        ..StandinConfig::default()
    }
}

/// No faults but those `set` turns on.
pub(crate) fn faults(set: impl FnOnce(&mut Faults)) -> Faults {
    let mut faults = Faults::default();
    set(&mut faults);
    faults
}

/// The `n`th lead's (18-character) id.
pub(crate) fn lead(n: u32) -> String {
    format!("00Q{n:012}AAA")
}
