//! Latency percentiles of a sorted list of durations: nearest rank, and
//! the four a report shows (p50, p90, p99, max), as text and as JSON, in
//! microseconds.

use std::time::Duration;

/// The percentiles a report shows, with their names.
const SHOWN: [(&str, f64); 4] = [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("max", 100.0)];

/// The value at percentile `p` (0 to 100, nearest rank) of sorted `values`;
/// `None` when there are none.
pub(crate) fn nearest_rank(values: &[Duration], p: f64) -> Option<Duration> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    values.get(rank.clamp(1, n) - 1).copied()
}

/// The shown percentiles in microseconds, `None` without values.
fn shown_micros(values: &[Duration]) -> impl Iterator<Item = (&'static str, Option<u64>)> + '_ {
    SHOWN
        .iter()
        .map(|&(name, p)| (name, nearest_rank(values, p).map(|d| d.as_micros() as u64)))
}

/// `p50 400  p90 800  p99 800  max 800` (µs; `-` without values).
pub(crate) fn text(values: &[Duration]) -> String {
    shown_micros(values)
        .map(|(name, us)| match us {
            Some(us) => format!("{name} {us}"),
            None => format!("{name} -"),
        })
        .collect::<Vec<_>>()
        .join("  ")
}

/// `{"p50": 400, "p90": 800, "p99": 800, "max": 800}` (µs; `null` without
/// values).
pub(crate) fn json(values: &[Duration]) -> serde_json::Value {
    shown_micros(values)
        .map(|(name, us)| (name.to_owned(), serde_json::Value::from(us)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(values: impl IntoIterator<Item = u64>) -> Vec<Duration> {
        values.into_iter().map(Duration::from_micros).collect()
    }

    #[test]
    fn nearest_rank_of_one_to_a_hundred() {
        let values = micros(1..=100);
        assert_eq!(nearest_rank(&values, 50.0), Some(Duration::from_micros(50)));
        assert_eq!(nearest_rank(&values, 99.0), Some(Duration::from_micros(99)));
        assert_eq!(
            nearest_rank(&values, 100.0),
            Some(Duration::from_micros(100))
        );
        assert_eq!(nearest_rank(&values, 0.0), Some(Duration::from_micros(1)));
        assert_eq!(nearest_rank(&[], 50.0), None);
    }

    #[test]
    fn few_values_round_the_rank_up() {
        // 8 values: p50 is the 4th, p90 ceil(7.2) = the 8th.
        let values = micros((1..=8).map(|i| i * 100));
        assert_eq!(text(&values), "p50 400  p90 800  p99 800  max 800");
        assert_eq!(
            json(&values).to_string(),
            r#"{"p50":400,"p90":800,"p99":800,"max":800}"#
        );
        let one = micros([7]);
        assert_eq!(text(&one), "p50 7  p90 7  p99 7  max 7");
    }

    #[test]
    fn nothing_measured_shows_dashes_and_nulls() {
        assert_eq!(text(&[]), "p50 -  p90 -  p99 -  max -");
        assert_eq!(
            json(&[]).to_string(),
            r#"{"p50":null,"p90":null,"p99":null,"max":null}"#
        );
    }
}
