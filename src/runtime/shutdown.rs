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
        let (term, int) = {
            use tokio::signal::unix::{signal, SignalKind};
            (
                arrival(signal(SignalKind::terminate()), "SIGTERM"),
                arrival(signal(SignalKind::interrupt()), "SIGINT"),
            )
        };
        tokio::spawn(async move {
            #[cfg(unix)]
            let first = tokio::select! {
                () = term => "SIGTERM",
                () = int => "SIGINT",
            };
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
            if let Some(deadline) = deadline {
                stop_deadline(deadline);
            }
        });
    }
}

/// Exits the process (status 1, saying why) `deadline` from now, from a thread of its own:
/// the runtime may be the thing that does not stop.
fn stop_deadline(deadline: Duration) {
    let watchdog = std::thread::Builder::new()
        .name("stop-deadline".into())
        .spawn(move || {
            std::thread::sleep(deadline);
            tracing::error!(
                deadline = ?deadline,
                "the service did not stop within {deadline:?} of the signal (a broker or \
                 database that stopped answering?); exiting without finishing: the next start \
                 replays from the last checkpoint"
            );
            std::process::exit(1);
        });
    if let Err(e) = watchdog {
        tracing::warn!(error = %e, "cannot start the stop deadline's thread");
    }
}

/// Resolves when the signal `stream` listens for arrives; never, when its handler could not be
/// installed (not expected on Unix: said once, and the other signal still works).
#[cfg(unix)]
async fn arrival(stream: std::io::Result<tokio::signal::unix::Signal>, name: &'static str) {
    match stream {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the {name} handler");
            std::future::pending::<()>().await
        }
    }
}
