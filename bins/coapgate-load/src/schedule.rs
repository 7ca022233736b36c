//! The budget and timetable all devices of a run share: `requests` tickets
//! in all, handed out in order, each with the earliest moment it may be
//! used (evenly spaced at `rate` per second, or all at once), until `end`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// What all devices share: the budget and the schedule.
#[derive(Debug)]
pub(crate) struct Schedule {
    next_ticket: AtomicU64,
    requests: u64,
    rate: Option<f64>,
    start: Instant,
    /// When the run stops, whatever is outstanding.
    pub(crate) end: Instant,
}

impl Schedule {
    /// `requests` tickets from `start`, at `rate` per second (or as fast as
    /// they are claimed), for `duration`.
    pub(crate) fn new(
        requests: u64,
        rate: Option<f64>,
        start: Instant,
        duration: Duration,
    ) -> Self {
        Self {
            next_ticket: AtomicU64::new(0),
            requests,
            rate,
            start,
            end: start + duration,
        }
    }

    /// Claims the next ticket; `Some(when it may be used)`, or `None` when
    /// the budget is spent.
    pub(crate) fn claim(&self) -> Option<Instant> {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        if ticket >= self.requests {
            return None;
        }
        Some(match self.rate {
            Some(rate) => self.start + Duration::from_secs_f64(ticket as f64 / rate),
            None => self.start,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_spent_once() {
        let start = Instant::now();
        let schedule = Schedule::new(3, None, start, Duration::from_secs(1));
        assert_eq!(schedule.end, start + Duration::from_secs(1));
        let claims: Vec<_> = std::iter::from_fn(|| schedule.claim()).collect();
        assert_eq!(claims, vec![start; 3]);
        assert_eq!(schedule.claim(), None);
    }

    #[test]
    fn a_rate_spaces_the_tickets_evenly() {
        let start = Instant::now();
        let schedule = Schedule::new(4, Some(128.0), start, Duration::from_secs(1));
        let offsets: Vec<_> = std::iter::from_fn(|| schedule.claim())
            .map(|at| at - start)
            .collect();
        // 1/128 s is exact in binary: 7.8125 ms apart.
        assert_eq!(
            offsets,
            [0, 7_812_500, 15_625_000, 23_437_500]
                .map(Duration::from_nanos)
                .to_vec()
        );
    }
}
