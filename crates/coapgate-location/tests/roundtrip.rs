//! Property: every coordinate prints without an exponent as a decimal that
//! parses back to exactly the same f64.

use coapgate_location::{Position, coordinate, csv};
use proptest::prelude::*;

proptest! {
    #[test]
    fn coordinates_round_trip_exactly_without_exponent(lon in -180.0f64..=180.0, lat in -90.0f64..=90.0) {
        for value in [lon, lat] {
            let text = coordinate(value);
            prop_assert!(!text.contains(['e', 'E']), "{}", text);
            let back: f64 = text.parse().unwrap();
            prop_assert_eq!(back, value);
        }
        let p = Position::new(lon, lat, "GPS", 1).unwrap();
        let body = csv(&p);
        let row = body.lines().nth(1).unwrap();
        let fields: Vec<&str> = row.split(',').collect();
        prop_assert_eq!(fields.len(), 4);
        prop_assert_eq!(fields[0].parse::<f64>().unwrap(), lon);
        prop_assert_eq!(fields[1].parse::<f64>().unwrap(), lat);
    }

    #[test]
    fn tiny_coordinates_round_trip_too(exp in -300i32..0, mantissa in 1.0f64..10.0) {
        let value = mantissa * 10f64.powi(exp);
        prop_assume!(value.abs() <= 90.0);
        let text = coordinate(value);
        prop_assert!(!text.contains('e'));
        prop_assert_eq!(text.parse::<f64>().unwrap(), value);
    }
}
