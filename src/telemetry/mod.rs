//! Side channels of observability shared by every module: for now,
//! [`Coalesced`] log lines, so a flood of one event (refused connections,
//! descriptors running out) logs one line per interval with a count instead
//! of one line per event.
//!
//! Must not import: anything of ours (every module may use it).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one event through per `interval` and counts the rest.
///
/// ```
/// use std::time::{Duration, Instant};
/// let refused = maxine::telemetry::Coalesced::new(Duration::from_secs(10));
/// let t = Instant::now();
/// assert_eq!(refused.hit(t), Some(0)); // first: log it
/// assert_eq!(refused.hit(t), None); // coalesced
/// assert_eq!(refused.hit(t + Duration::from_secs(10)), Some(1)); // log, "1 more since"
/// ```
#[derive(Debug)]
pub struct Coalesced {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl Coalesced {
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// Counts one event at `now`. `Some(n)`: log this one now, saying that
    /// `n` more happened (and were not logged) since the previous line.
    /// `None`: it was counted into the next line.
    pub fn hit(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_carries_the_count_of_the_rest() {
        let c = Coalesced::new(Duration::from_secs(5));
        let t = Instant::now();
        assert_eq!(c.hit(t), Some(0));
        for i in 1..=4 {
            assert_eq!(c.hit(t + Duration::from_secs(i)), None);
        }
        assert_eq!(c.hit(t + Duration::from_secs(5)), Some(4));
        assert_eq!(c.hit(t + Duration::from_secs(6)), None);
        // A quiet spell: the next event logs at once, with what was left over.
        assert_eq!(c.hit(t + Duration::from_secs(60)), Some(1));
        assert_eq!(c.hit(t + Duration::from_secs(120)), Some(0));
    }

    #[test]
    fn a_clock_that_goes_back_does_not_panic_and_coalesces() {
        let c = Coalesced::new(Duration::from_secs(5));
        let t = Instant::now() + Duration::from_secs(100);
        assert_eq!(c.hit(t), Some(0));
        assert_eq!(c.hit(t - Duration::from_secs(50)), None);
    }
}
