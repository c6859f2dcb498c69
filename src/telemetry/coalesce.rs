//! "Log at most once per interval, then say how many were coalesced."
//!
//! A failure that repeats (descriptor exhaustion on accept, a store that is
//! down, a UDP socket error) would otherwise write a line per occurrence:
//! hundreds a second, which hides everything else and fills disks. A
//! [`LogEvery`] lets the first occurrence through, swallows the rest for one
//! interval, and the next line it lets through carries how many it
//! swallowed ("and 89 more").
//!
//! It is a plain value owned by one loop (`&mut self`, no lock, no atomics),
//! and takes `now` as a parameter, so tests drive it with made-up instants.

use std::fmt;
use std::time::{Duration, Instant};

/// Lets one occurrence per interval be logged and counts the others.
#[derive(Debug, Clone)]
pub struct LogEvery {
    interval: Duration,
    last: Option<Instant>,
    coalesced: u64,
}

/// What a line that [`LogEvery::hit`] let through should add: how many
/// occurrences were not logged since the previous line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalesced(pub u64);

impl fmt::Display for Coalesced {
    /// Nothing when none were coalesced, else `" (and N more)"`, to end a
    /// log message with.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " (and {n} more)"),
        }
    }
}

impl LogEvery {
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            coalesced: 0,
        }
    }

    /// Records one occurrence at `now`. `Some` means log it now, mentioning
    /// the count it carries; `None` means it was counted, not logged.
    pub fn hit(&mut self, now: Instant) -> Option<Coalesced> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.interval => {
                self.coalesced += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(Coalesced(std::mem::take(&mut self.coalesced)))
            }
        }
    }

    /// Occurrences counted since the last line let through (for a final
    /// line, e.g. "recovered, after N more").
    pub fn pending(&self) -> u64 {
        self.coalesced
    }

    /// Forgets the interval: the next occurrence is logged at once, and
    /// hands back what was still pending. Used when the condition ended (the
    /// store is back), so its next start is reported promptly.
    pub fn reset(&mut self) -> Coalesced {
        self.last = None;
        Coalesced(std::mem::take(&mut self.coalesced))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_occurrence_is_logged_and_the_rest_of_the_interval_only_counted() {
        let t0 = Instant::now();
        let mut every = LogEvery::new(10 * SEC);
        assert_eq!(every.hit(t0), Some(Coalesced(0)));
        // 90 a second for ten seconds: none logged until the interval ends.
        for i in 1..900u32 {
            assert_eq!(every.hit(t0 + i * SEC / 90), None);
        }
        assert_eq!(every.pending(), 899);
        // The next line says how many were coalesced, and counting restarts.
        assert_eq!(every.hit(t0 + 10 * SEC), Some(Coalesced(899)));
        assert_eq!(every.hit(t0 + 11 * SEC), None);
        assert_eq!(every.hit(t0 + 20 * SEC), Some(Coalesced(1)));
    }

    #[test]
    fn an_occurrence_after_a_quiet_spell_is_logged_at_once() {
        let t0 = Instant::now();
        let mut every = LogEvery::new(SEC);
        assert!(every.hit(t0).is_some());
        assert!(every.hit(t0 + 60 * SEC).is_some());
        // A clock that steps back (another thread's instant) counts as within.
        assert_eq!(every.hit(t0), None);
    }

    #[test]
    fn reset_hands_back_the_pending_count_and_lets_the_next_through() {
        let t0 = Instant::now();
        let mut every = LogEvery::new(10 * SEC);
        every.hit(t0);
        every.hit(t0 + SEC);
        every.hit(t0 + 2 * SEC);
        assert_eq!(every.reset(), Coalesced(2));
        assert_eq!(every.hit(t0 + 3 * SEC), Some(Coalesced(0)));
    }

    #[test]
    fn the_count_reads_as_and_n_more() {
        assert_eq!(format!("accept failed{}", Coalesced(0)), "accept failed");
        assert_eq!(
            format!("accept failed{}", Coalesced(89)),
            "accept failed (and 89 more)"
        );
    }
}
