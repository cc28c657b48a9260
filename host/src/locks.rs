//! Mutex access for the host's small shared maps.
//!
//! Every critical section guarded this way is a single insert, remove or
//! read, so a panic elsewhere cannot leave the data half-updated: a poisoned
//! lock is taken over instead of turning one panic into many.

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
