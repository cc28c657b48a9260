//! Times as the store and the listings keep them: seconds since the Unix
//! epoch. A leaf, so that data types and stores share it without naming
//! each other.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, as stored.
pub fn to_secs(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// The time `secs` after the epoch; a stored value no clock can hold (a
/// corrupt row) reads as the epoch rather than overflowing.
pub fn from_secs(secs: f64) -> SystemTime {
    Duration::try_from_secs_f64(secs).ok().and_then(|d| UNIX_EPOCH.checked_add(d)).unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stored_times_no_clock_can_hold_read_as_the_epoch() {
        for secs in [1e300, f64::INFINITY, f64::NAN, -5.0, 1.8e19] {
            assert_eq!(from_secs(secs), UNIX_EPOCH, "{secs}");
        }
        let now = SystemTime::now();
        let drift = from_secs(to_secs(now)).duration_since(now).unwrap_or_else(|e| e.duration());
        assert!(drift < Duration::from_millis(1));
    }
}
