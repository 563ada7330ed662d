//! Blocking work off the async workers.
//!
//! Start-up reads files, opens the local store and makes librdkafka calls that wait on the
//! network (metadata, `init_transactions`). On a runtime worker those would stall every task on
//! it, the admin port's `/healthz` included; run them here instead.

/// Runs `f` on tokio's blocking pool and returns its result. A panic in `f` is resumed here, as
/// if `f` had run inline.
pub async fn blocking<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels a blocking task, and then nobody awaits this.
        Err(e) => panic!("blocking task cancelled: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_off_the_worker_and_returns_the_value() {
        let worker = std::thread::current().id();
        let (value, thread) = blocking(|| (42, std::thread::current().id())).await;
        assert_eq!(value, 42);
        assert_ne!(thread, worker);
    }
}
