//! Driving a sans-IO state machine's timers on a fake clock.
//!
//! Every state machine in coapgate (the engine, the DTLS server, the
//! gateway that combines them) names the next instant it has work
//! (`poll_timeout`) and does it when told (`handle_timeout`). A test or a
//! fuzz harness that lets time pass must fire each timer exactly at its
//! instant, in order — not once at the end, or a 247 s lifetime and a 2 s
//! retransmission would be judged at the same moment. [`advance`] is that
//! loop, written once for every harness.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use coapgate_exchange::clock::{Timers, advance};
//!
//! /// Ticks every second, counting.
//! struct Ticker { next: Instant, ticks: Vec<Instant> }
//! impl Timers for Ticker {
//!     fn poll_timeout(&self) -> Option<Instant> { Some(self.next) }
//!     fn handle_timeout(&mut self, now: Instant) {
//!         self.ticks.push(now);
//!         self.next = now + Duration::from_secs(1);
//!     }
//! }
//! let t0 = Instant::now();
//! let mut ticker = Ticker { next: t0 + Duration::from_secs(1), ticks: Vec::new() };
//! let fired = advance(&mut ticker, t0, t0 + Duration::from_millis(3500));
//! assert_eq!(fired, 3);
//! assert_eq!(ticker.ticks, [1, 2, 3].map(|s| t0 + Duration::from_secs(s)));
//! ```

use std::time::Instant;

/// A sans-IO state machine's timers.
pub trait Timers {
    /// The next instant [`handle_timeout`](Self::handle_timeout) has work,
    /// if any.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Does the work due at `now` (and whatever draining of outputs the
    /// caller wants after it).
    fn handle_timeout(&mut self, now: Instant);
}

/// Most firings one [`advance`] makes before it decides the machine is
/// stuck (a timer that never moves past the instant it fired at).
pub const MAX_FIRINGS: usize = 100_000;

/// Lets time pass from `now` to `target`: fires every timer of `machine`
/// that falls due on the way at its own instant (never before `now`), in
/// order, until the next one lies after `target`. Returns how many times
/// it fired.
///
/// # Panics
///
/// After [`MAX_FIRINGS`] firings: a machine whose timer does not move
/// forward is a bug the test must see, not a hang.
pub fn advance<M: Timers + ?Sized>(machine: &mut M, now: Instant, target: Instant) -> usize {
    let mut clock = now;
    for fired in 0..MAX_FIRINGS {
        match machine.poll_timeout() {
            Some(at) if at <= target => {
                clock = clock.max(at);
                machine.handle_timeout(clock);
            }
            _ => return fired,
        }
    }
    panic!("timers still due after {MAX_FIRINGS} firings: the machine is stuck");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    struct Once(Option<Instant>, Vec<Instant>);

    impl Timers for Once {
        fn poll_timeout(&self) -> Option<Instant> {
            self.0
        }
        fn handle_timeout(&mut self, now: Instant) {
            self.1.push(now);
            self.0 = None;
        }
    }

    #[test]
    fn a_timer_in_the_past_fires_now_and_one_after_the_target_not_at_all() {
        let t0 = Instant::now();
        let mut past = Once(Some(t0), Vec::new());
        assert_eq!(
            advance(
                &mut past,
                t0 + Duration::from_secs(1),
                t0 + Duration::from_secs(2)
            ),
            1
        );
        assert_eq!(past.1, [t0 + Duration::from_secs(1)]);
        let mut later = Once(Some(t0 + Duration::from_secs(3)), Vec::new());
        assert_eq!(advance(&mut later, t0, t0 + Duration::from_secs(2)), 0);
        assert!(later.1.is_empty());
    }

    #[test]
    #[should_panic(expected = "stuck")]
    fn a_timer_that_never_moves_is_reported() {
        struct Stuck(Instant);
        impl Timers for Stuck {
            fn poll_timeout(&self) -> Option<Instant> {
                Some(self.0)
            }
            fn handle_timeout(&mut self, _: Instant) {}
        }
        let t0 = Instant::now();
        advance(&mut Stuck(t0), t0, t0);
    }
}
