//! Bounded fan-out of blocking work over a few threads: restoring the partitions of one
//! assignment at once (each restore waits on the broker as much as it computes).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// How many partitions an assignment restores at once. Each restore holds its partition's
/// state twice while it runs (the replay and the local store's copy), so this also bounds
/// the memory a large assignment takes on top of the restored state.
pub const RESTORE_PARALLELISM: usize = 4;

/// Runs `f` on every item, on up to `workers` threads at once (at least one; no more than there
/// are items), and returns the results in the order of `items`. Items are taken in order as
/// threads come free. A panic in `f` is resumed here once every thread has stopped.
pub fn map<T, R, F>(items: &[T], workers: usize, f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let workers = workers.clamp(1, items.len().max(1));
    if workers == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                super::sync::lock_unpoisoned(&results)[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every item ran: a panic would have been resumed by the scope"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn results_keep_the_order_of_the_items() {
        let items: Vec<u64> = (0..50).collect();
        for workers in [0, 1, 3, 64] {
            let out = map(&items, workers, |&i| {
                // Later items finish first.
                std::thread::sleep(Duration::from_micros(50 - i));
                i * 2
            });
            assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
        assert!(map(&[] as &[u8], 4, |_| 0).is_empty());
    }

    #[test]
    fn no_more_than_the_workers_run_at_once() {
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let items: Vec<u32> = (0..40).collect();
        map(&items, 3, |_| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            running.fetch_sub(1, Ordering::SeqCst);
        });
        let most = most.load(Ordering::SeqCst);
        assert!((2..=3).contains(&most), "{most} ran at once");
    }

    /// The first item waits for the second to start: done one after the other, it would give
    /// up after the timeout and say so.
    #[test]
    fn items_run_at_the_same_time() {
        let (tx, rx) = mpsc::channel::<()>();
        let (tx, rx) = (Mutex::new(tx), Mutex::new(rx));
        let out = map(&[0, 1], 2, |&i| {
            if i == 0 {
                super::super::sync::lock_unpoisoned(&rx)
                    .recv_timeout(Duration::from_secs(10))
                    .is_ok()
            } else {
                super::super::sync::lock_unpoisoned(&tx).send(()).is_ok()
            }
        });
        assert_eq!(out, vec![true, true]);
    }

    #[test]
    fn a_panic_in_one_item_reaches_the_caller() {
        let r = std::panic::catch_unwind(|| map(&[1, 2, 3], 2, |&i| assert_ne!(i, 2)));
        assert!(r.is_err());
    }
}
