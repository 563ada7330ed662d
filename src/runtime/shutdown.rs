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
        let streams = {
            use tokio::signal::unix::{signal, SignalKind};
            (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            )
        };
        tokio::spawn(async move {
            #[cfg(unix)]
            match streams {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                (term, int) => {
                    // Not expected on Unix; if one could not be installed, wait for the other.
                    tracing::warn!(
                        "cannot install a signal handler (SIGTERM: {:?}, SIGINT: {:?})",
                        term.as_ref().err(),
                        int.as_ref().err()
                    );
                    match (term, int) {
                        (Ok(mut t), _) => {
                            t.recv().await;
                        }
                        (_, Ok(mut i)) => {
                            i.recv().await;
                        }
                        _ => std::future::pending::<()>().await,
                    }
                }
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
