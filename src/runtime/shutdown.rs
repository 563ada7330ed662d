//! One shutdown primitive passed down to every loop: set by SIGTERM/SIGINT (or a test), checked
//! by the blocking consumer loops between polls and awaited by the async tasks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
            tokio::select! {
                () = term => {},
                () = int => {},
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
            tracing::info!("shutdown signal received; finishing the current batch");
            s.trigger();
        });
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
