//! One shutdown primitive passed down to every loop: set by SIGTERM/SIGINT (or a test), checked
//! by the blocking consumer loops between polls and awaited by the async tasks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Clone, Default, Debug)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Resolves once shutdown is triggered.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }

    /// Triggers shutdown on the first SIGTERM or SIGINT. The handlers are installed before
    /// this returns (not at the spawned task's first poll), so a signal that comes while the
    /// service starts is never met by the default action, which ends the process at once
    /// without a word (exit status "signal 15").
    pub fn on_signals(&self) {
        self.watch_signals(None);
    }

    /// [`Shutdown::on_signals`], and the process exits (status 1, saying why) when it has not
    /// ended `deadline` after the first signal. For the Kafka
    /// services: their final checkpoint and their clients' close wait for the broker, and a
    /// scorer stopped after its broker went away was still running a quarter of an hour later,
    /// a second SIGTERM ignored (an outside check). Exiting there is a crash, which the
    /// services are built to survive (SPEC 3.9): the next start replays from the last
    /// checkpoint.
    pub fn on_signals_within(&self, deadline: Duration) {
        self.watch_signals(Some(deadline));
    }

    fn watch_signals(&self, deadline: Option<Duration>) {
        let s = self.clone();
        #[cfg(unix)]
        let mut signals = Signals::install();
        tokio::spawn(async move {
            #[cfg(unix)]
            let first = signals.next().await;
            #[cfg(not(unix))]
            let first = {
                let _ = tokio::signal::ctrl_c().await;
                "ctrl-c"
            };
            tracing::info!(
                signal = first,
                "shutdown signal received; finishing the current batch"
            );
            s.trigger();
            let Some(deadline) = deadline else { return };
            let watchdog = std::thread::Builder::new()
                .name("stop-deadline".into())
                .spawn(move || {
                    std::thread::sleep(deadline);
                    tracing::error!(
                        deadline = ?deadline,
                        "the service did not stop within {deadline:?} of the signal (a broker \
                         or database that stopped answering?); exiting without finishing: the \
                         next start replays from the last checkpoint"
                    );
                    std::process::exit(1);
                });
            if let Err(e) = watchdog {
                tracing::warn!(error = %e, "cannot start the stop deadline's thread");
            }
            // No wait for a second signal here: a task left waiting for one kept the scorer
            // from stopping in time when its broker was gone (the stop took the whole 50 s
            // where it takes 6 s without that task; not understood, so not done).
        });
    }
}

/// The SIGTERM and SIGINT handlers, installed once, awaited as often as signals come.
#[cfg(unix)]
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let install = |kind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                // Not expected on Unix: said once, and the other signal still works.
                tracing::warn!(error = %e, "cannot install the {name} handler");
                None
            }
        };
        Signals {
            term: install(SignalKind::terminate(), "SIGTERM"),
            int: install(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// The name of the next signal to arrive; never, when neither handler is installed.
    async fn next(&mut self) -> &'static str {
        async fn arrival(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = arrival(&mut self.term) => "SIGTERM",
            () = arrival(&mut self.int) => "SIGINT",
        }
    }
}
