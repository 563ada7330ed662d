//! Locking shared state that a panicking thread may have left poisoned.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the guard even when another thread panicked while holding it. Every lock
/// in the services guards plain bookkeeping (gauges, health, fault flags, owned partitions) that
/// each update leaves consistent, so a panic elsewhere must not turn into a second panic here;
/// the panic itself is reported where it happened.
pub(crate) fn lock_unpoisoned<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_gives_its_value() {
        let m = Mutex::new(1);
        let _ = std::panic::catch_unwind(|| {
            let _g = m.lock().unwrap();
            panic!("poison it");
        });
        assert!(m.is_poisoned());
        *lock_unpoisoned(&m) += 1;
        assert_eq!(*lock_unpoisoned(&m), 2);
    }
}
