//! Per-key token buckets on the caller's clock: the device rate limit of
//! spec.md §2.1 step 4 (keyed by ICCID) and the DTLS handshake limit
//! (keyed by source IP).
//!
//! A [`RateLimit`] is a bucket of `burst` tokens refilled at `rate` tokens a
//! second; each admitted event takes one. [`RateLimiter`] keeps one bucket
//! per key as a single [`Instant`] — the generic cell rate algorithm
//! (GCRA): the *theoretical arrival time* `tat` after which the bucket is
//! full again. An event at `now` is admitted when `tat − now ≤ (burst − 1)
//! / rate`, and then moves `tat` on by `1 / rate`; otherwise it is refused
//! with the time until one token is back. No floating point on the hot path,
//! no timer: every call takes `now`.
//!
//! **Memory.** A bucket whose `tat` has passed is full, which is the same
//! as having no entry; such entries are dropped by a sweep that runs at
//! most once per fill time (`burst / rate`, kept within 1–60 s), from
//! [`RateLimiter::check`] or [`RateLimiter::sweep`]. So the map holds only
//! the keys seen within about one fill time. It is also capped
//! ([`RateLimiter::with_max_keys`], [`DEFAULT_MAX_KEYS`] by default): a new
//! key that finds the map full is admitted without a bucket (fails open)
//! until the next sweep makes room — a limit can never refuse a key
//! because of other keys.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use coapgate_exchange::{RateLimit, RateLimiter};
//!
//! // 2 requests a second, bursts of 3.
//! let mut limiter = RateLimiter::new(RateLimit::per_second(2.0, 3).unwrap());
//! let t0 = Instant::now();
//! for _ in 0..3 {
//!     assert_eq!(limiter.check(t0, &"device"), Ok(()));
//! }
//! // The fourth at once: one token is back in half a second.
//! assert_eq!(limiter.check(t0, &"device"), Err(Duration::from_millis(500)));
//! assert_eq!(limiter.check(t0 + Duration::from_millis(500), &"device"), Ok(()));
//! // Other keys have buckets of their own.
//! assert_eq!(limiter.check(t0, &"other"), Ok(()));
//! ```

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The most keys a [`RateLimiter`] tracks by default (about 1 M; some
/// 60–100 bytes each with an ICCID or an IP address as key).
pub const DEFAULT_MAX_KEYS: usize = 1 << 20;

/// Highest `rate` accepted, tokens a second.
const MAX_RATE: f64 = 1_000_000.0;
/// Lowest non-zero `rate` accepted, tokens a second (one a ~11.6 days).
const MIN_RATE: f64 = 0.000_001;
/// Highest `burst` accepted.
const MAX_BURST: u32 = 1_000_000;
/// Sweeps run at most this often…
const MIN_SWEEP: Duration = Duration::from_secs(1);
/// …and at least this often while there are buckets.
const MAX_SWEEP: Duration = Duration::from_secs(60);

/// A token bucket's parameters: `rate` tokens a second, at most `burst`
/// at once; or off. [`Default`] is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimit {
    /// Time to earn one token (1 / rate); `None`: no limit.
    interval: Option<Duration>,
    burst: u32,
}

impl RateLimit {
    /// No limit.
    pub const OFF: RateLimit = RateLimit {
        interval: None,
        burst: 0,
    };

    /// `rate` tokens a second (0: off, whatever `burst` is), buckets of
    /// `burst` tokens. A rate must be 0 or within 0.000001–1 000 000 and
    /// finite; with a rate, `burst` must be 1–1 000 000.
    pub fn per_second(rate: f64, burst: u32) -> Result<Self, InvalidRateLimit> {
        let bad = |field, reason| Err(InvalidRateLimit { field, reason });
        if rate == 0.0 {
            return Ok(Self::OFF);
        }
        if !rate.is_finite() || !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return bad(
                "rate",
                "must be 0 (off) or a number from 0.000001 to 1000000 (per second)",
            );
        }
        if !(1..=MAX_BURST).contains(&burst) {
            return bad(
                "burst",
                "must be from 1 to 1000000 when the rate is above 0",
            );
        }
        let Ok(interval) = Duration::try_from_secs_f64(1.0 / rate) else {
            return bad("rate", "is out of range");
        };
        Ok(Self {
            interval: Some(interval),
            burst,
        })
    }

    /// Whether there is no limit.
    pub fn is_off(&self) -> bool {
        self.interval.is_none()
    }

    /// Tokens a second; 0 when off.
    pub fn rate(&self) -> f64 {
        self.interval.map_or(0.0, |i| 1.0 / i.as_secs_f64())
    }

    /// The bucket size; 0 when off.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Time from an empty bucket to a full one; zero when off.
    pub fn fill_time(&self) -> Duration {
        self.interval.map_or(Duration::ZERO, |i| i * self.burst)
    }
}

/// A [`RateLimit`] out of range: which part (`rate` or `burst`), and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidRateLimit {
    /// `rate` or `burst`.
    pub field: &'static str,
    /// What is wrong with its value.
    pub reason: &'static str,
}

impl fmt::Display for InvalidRateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for InvalidRateLimit {}

/// One token bucket per key, on the caller's clock. See the
/// [module docs](self) for the algorithm and the memory bound.
#[derive(Debug, Clone)]
pub struct RateLimiter<K> {
    limit: RateLimit,
    /// Per key: when its bucket is full again (GCRA's theoretical arrival
    /// time). Entries in the past are full buckets, dropped by sweeps.
    tats: HashMap<K, Instant>,
    max_keys: usize,
    /// When the next sweep is due (`None`: no bucket since the last one).
    next_sweep: Option<Instant>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter tracking at most [`DEFAULT_MAX_KEYS`] keys.
    pub fn new(limit: RateLimit) -> Self {
        Self::with_max_keys(limit, DEFAULT_MAX_KEYS)
    }

    /// A limiter tracking at most `max_keys` keys; a new key beyond them
    /// is admitted untracked until a sweep makes room.
    pub fn with_max_keys(limit: RateLimit, max_keys: usize) -> Self {
        Self {
            limit,
            tats: HashMap::new(),
            max_keys,
            next_sweep: None,
        }
    }

    /// The limit in force.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes a token from `key`'s bucket at `now`: `Ok` if there was one,
    /// else `Err` with the time until there is one (never zero).
    pub fn check(&mut self, now: Instant, key: &K) -> Result<(), Duration> {
        let Some(interval) = self.limit.interval else {
            return Ok(());
        };
        self.sweep(now);
        // Admitted while the bucket is at most `burst - 1` tokens short.
        let tolerance = interval * self.limit.burst.saturating_sub(1);
        let tat = match self.tats.get(key) {
            Some(&tat) if tat > now => tat,
            Some(_) => now,
            None if self.tats.len() >= self.max_keys => return Ok(()),
            None => now,
        };
        let ahead = tat - now;
        if ahead > tolerance {
            return Err(ahead - tolerance);
        }
        // `tat` lies within `burst / rate` of `now`, which the validated
        // bounds keep far from the end of `Instant`'s range; should it not
        // fit, the key is simply not tracked.
        match tat.checked_add(interval) {
            Some(next) => {
                if let Some(existing) = self.tats.get_mut(key) {
                    *existing = next;
                } else {
                    self.tats.insert(key.clone(), next);
                }
                if self.next_sweep.is_none() {
                    self.next_sweep = Some(now + self.sweep_period());
                }
            }
            None => {
                self.tats.remove(key);
            }
        }
        Ok(())
    }

    /// Drops the buckets that are full again at `now`, if a sweep is due
    /// (at most once per fill time, within 1–60 s). Cheap when not due.
    pub fn sweep(&mut self, now: Instant) {
        match self.next_sweep {
            Some(due) if due <= now => {}
            _ => return,
        }
        self.tats.retain(|_, tat| *tat > now);
        self.next_sweep = (!self.tats.is_empty()).then(|| now + self.sweep_period());
    }

    /// Keys with a bucket that is not known to be full.
    pub fn len(&self) -> usize {
        self.tats.len()
    }

    /// Whether no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.tats.is_empty()
    }

    fn sweep_period(&self) -> Duration {
        self.limit.fill_time().clamp(MIN_SWEEP, MAX_SWEEP)
    }
}

/// Whole seconds, rounded up, at least 1 and at most `u32::MAX`: the
/// Max-Age of a 4.29 Too Many Requests for a wait of `wait` (RFC 8516 §4).
pub fn whole_seconds(wait: Duration) -> u32 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn off_admits_everything_and_keeps_nothing() {
        let mut limiter = RateLimiter::new(RateLimit::default());
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(limiter.check(t0, &1u32), Ok(()));
        }
        assert!(limiter.is_empty());
        assert_eq!(RateLimit::per_second(0.0, 0), Ok(RateLimit::OFF));
        assert!(RateLimit::OFF.is_off());
    }

    #[test]
    fn a_burst_then_one_token_per_interval() {
        let limit = RateLimit::per_second(4.0, 10).unwrap();
        assert_eq!((limit.rate(), limit.burst()), (4.0, 10));
        assert_eq!(limit.fill_time(), Duration::from_millis(2500));
        let mut limiter = RateLimiter::new(limit);
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(limiter.check(t0, &"a"), Ok(()), "request {i} of the burst");
        }
        assert_eq!(limiter.check(t0, &"a"), Err(ms(250)));
        // Refused requests cost nothing: still 250 ms to wait.
        assert_eq!(limiter.check(t0, &"a"), Err(ms(250)));
        assert_eq!(limiter.check(t0 + ms(100), &"a"), Err(ms(150)));
        assert_eq!(limiter.check(t0 + ms(250), &"a"), Ok(()));
        assert_eq!(limiter.check(t0 + ms(250), &"a"), Err(ms(250)));
        // A steady 4/s is always admitted.
        for i in 2..40 {
            assert_eq!(limiter.check(t0 + ms(250 * i), &"a"), Ok(()), "tick {i}");
        }
        // After the fill time the whole burst is back.
        let later = t0 + ms(250 * 39) + limit.fill_time();
        for _ in 0..10 {
            assert_eq!(limiter.check(later, &"a"), Ok(()));
        }
        assert!(limiter.check(later, &"a").is_err());
    }

    #[test]
    fn slow_rates_make_long_waits() {
        let mut limiter = RateLimiter::new(RateLimit::per_second(0.1, 1).unwrap());
        let t0 = Instant::now();
        assert_eq!(limiter.check(t0, &()), Ok(()));
        assert_eq!(limiter.check(t0 + ms(1), &()), Err(ms(9_999)));
        assert_eq!(whole_seconds(ms(9_999)), 10);
    }

    #[test]
    fn keys_do_not_share_buckets() {
        let mut limiter = RateLimiter::new(RateLimit::per_second(1.0, 2).unwrap());
        let t0 = Instant::now();
        for _ in 0..2 {
            assert!(limiter.check(t0, &"a").is_ok());
        }
        assert!(limiter.check(t0, &"a").is_err());
        for _ in 0..2 {
            assert!(limiter.check(t0, &"b").is_ok());
        }
        assert!(limiter.check(t0, &"b").is_err());
    }

    #[test]
    fn full_buckets_are_dropped_by_the_sweep() {
        // Fill time 2 s: the sweep runs every 2 s.
        let mut limiter = RateLimiter::new(RateLimit::per_second(5.0, 10).unwrap());
        let t0 = Instant::now();
        for key in 0..1000u32 {
            assert!(limiter.check(t0, &key).is_ok());
        }
        assert_eq!(limiter.len(), 1000);
        limiter.sweep(t0 + ms(1999));
        assert_eq!(limiter.len(), 1000, "no sweep before it is due");
        // Key 0 kept busy: its bucket is not full at the sweep.
        for i in 0..10 {
            assert!(limiter.check(t0 + ms(200 * i), &0).is_ok());
        }
        assert!(limiter.check(t0 + ms(1990), &0).is_ok());
        limiter.sweep(t0 + ms(2000));
        assert_eq!(limiter.len(), 1, "only the busy key is left");
        limiter.sweep(t0 + ms(10_000));
        assert!(limiter.is_empty());
    }

    #[test]
    fn a_full_map_admits_new_keys_untracked() {
        let mut limiter = RateLimiter::with_max_keys(RateLimit::per_second(1.0, 1).unwrap(), 2);
        let t0 = Instant::now();
        assert!(limiter.check(t0, &1).is_ok());
        assert!(limiter.check(t0, &2).is_ok());
        // Key 3 finds no room: admitted, every time, and not tracked.
        for _ in 0..3 {
            assert!(limiter.check(t0, &3).is_ok());
        }
        assert_eq!(limiter.len(), 2);
        // The tracked keys are still limited.
        assert!(limiter.check(t0, &1).is_err());
        // Once the sweep dropped the full buckets, key 3 gets one.
        assert!(limiter.check(t0 + ms(1000), &3).is_ok());
        assert!(limiter.check(t0 + ms(1000), &3).is_err());
    }

    #[test]
    fn bad_limits_name_their_part() {
        for rate in [-1.0, f64::NAN, f64::INFINITY, 1e-9, 2e6] {
            assert_eq!(
                RateLimit::per_second(rate, 10).map_err(|e| e.field),
                Err("rate"),
                "{rate}"
            );
        }
        for burst in [0, 1_000_001] {
            assert_eq!(
                RateLimit::per_second(1.0, burst).map_err(|e| e.field),
                Err("burst"),
                "{burst}"
            );
        }
        // The extremes are usable.
        for (rate, burst) in [(MIN_RATE, MAX_BURST), (MAX_RATE, MAX_BURST), (MAX_RATE, 1)] {
            let limit = RateLimit::per_second(rate, burst).unwrap();
            let mut limiter = RateLimiter::new(limit);
            assert!(limiter.check(Instant::now(), &0).is_ok());
        }
    }

    #[test]
    fn max_age_is_whole_seconds_rounded_up_at_least_one() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_nanos(1)), 1);
        assert_eq!(whole_seconds(ms(500)), 1);
        assert_eq!(whole_seconds(ms(1000)), 1);
        assert_eq!(whole_seconds(ms(1001)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
