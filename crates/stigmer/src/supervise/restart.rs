//! When to restart a service that exited, and after how long: pure logic,
//! tested without processes or clocks.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::manifest::Restart;

/// The first backoff; each further restart within the window doubles it.
const BASE: Duration = Duration::from_millis(250);
/// The longest backoff.
const CAP: Duration = Duration::from_secs(15);

/// What to do about a service that exited on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Its policy says not to restart it after this exit: it is done.
    Done,
    /// Restart it after this long.
    RestartAfter(Duration),
    /// It restarted too often: give up on the whole server.
    GiveUp,
}

/// The restarts of one service within its window.
#[derive(Debug, Default)]
pub(crate) struct History {
    restarts: VecDeque<Instant>,
}

impl History {
    /// Decides what happens after an exit at `now` (`failed`: non-zero
    /// status or a signal), and records the restart if there is one.
    pub(crate) fn decide(
        &mut self,
        policy: Restart,
        failed: bool,
        max_restarts: u32,
        window: Duration,
        now: Instant,
    ) -> Decision {
        match policy {
            Restart::No => return Decision::Done,
            Restart::OnFailure if !failed => return Decision::Done,
            Restart::OnFailure | Restart::Always => {}
        }
        while self.restarts.front().is_some_and(|t| now.duration_since(*t) > window) {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= max_restarts as usize {
            return Decision::GiveUp;
        }
        let backoff = BASE.saturating_mul(1 << self.restarts.len().min(16)).min(CAP);
        self.restarts.push_back(now);
        Decision::RestartAfter(backoff)
    }

    /// How many restarts are in the window.
    pub(crate) fn count(&self) -> usize {
        self.restarts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    #[test]
    fn policies() {
        let now = Instant::now();
        let mut h = History::default();
        assert_eq!(h.decide(Restart::No, true, 5, W, now), Decision::Done);
        assert_eq!(h.decide(Restart::OnFailure, false, 5, W, now), Decision::Done);
        assert_eq!(h.decide(Restart::OnFailure, true, 5, W, now), Decision::RestartAfter(BASE));
        assert_eq!(h.decide(Restart::Always, false, 5, W, now), Decision::RestartAfter(BASE * 2));
    }

    #[test]
    fn backoff_doubles_to_a_cap_then_gives_up() {
        let now = Instant::now();
        let mut h = History::default();
        let mut last = Duration::ZERO;
        for _ in 0..10 {
            let Decision::RestartAfter(d) = h.decide(Restart::Always, true, 10, W, now) else {
                panic!()
            };
            assert!(d >= last && d <= CAP);
            last = d;
        }
        assert_eq!(last, CAP);
        assert_eq!(h.decide(Restart::Always, true, 10, W, now), Decision::GiveUp);
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let start = Instant::now();
        let mut h = History::default();
        for _ in 0..3 {
            h.decide(Restart::Always, true, 3, W, start);
        }
        assert_eq!(h.decide(Restart::Always, true, 3, W, start), Decision::GiveUp);
        let later = start + W + Duration::from_secs(1);
        assert_eq!(h.decide(Restart::Always, true, 3, W, later), Decision::RestartAfter(BASE));
        assert_eq!(h.count(), 1);
    }
}
