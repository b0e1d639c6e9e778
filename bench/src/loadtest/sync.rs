//! Locking for the load tester's shared maps and counters.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data even if a task panicked while holding it: the
/// load tester's maps and counters stay usable, and a panicked task shows as a
/// missing track in the report, not as a second panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
