//! US EPA Air Quality Index from PM2.5, with the breakpoint table of the 2024 revision.

/// (PM2.5 low, PM2.5 high, AQI low, AQI high), µg/m³ truncated to 0.1.
const BREAKPOINTS: [(f64, f64, u16, u16); 6] = [
    (0.0, 9.0, 0, 50),
    (9.1, 35.4, 51, 100),
    (35.5, 55.4, 101, 150),
    (55.5, 125.4, 151, 200),
    (125.5, 225.4, 201, 300),
    (225.5, 325.4, 301, 500),
];

/// The AQI of a 24-hour PM2.5 concentration: EPA truncates to one decimal, then interpolates
/// linearly inside the breakpoint row. Above the table's top (325.4) the index is capped at 500.
/// `None` for negative or non-finite input.
pub fn pm25_to_aqi(pm25: f64) -> Option<u16> {
    if !pm25.is_finite() || pm25 < 0.0 {
        return None;
    }
    // Truncation, not rounding, and in tenths to dodge binary fractions (35.4 stays 35.4).
    let c = (pm25 * 10.0 + 1e-9).floor() / 10.0;
    for (lo, hi, ilo, ihi) in BREAKPOINTS {
        if c <= hi + 1e-9 {
            let c = c.max(lo);
            let aqi = (f64::from(ihi - ilo) / (hi - lo)) * (c - lo) + f64::from(ilo);
            return Some(aqi.round() as u16);
        }
    }
    Some(500)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_breakpoint_table_at_every_edge() {
        let edges = [
            (0.0, 0),
            (9.0, 50),
            (9.1, 51),
            (35.4, 100),
            (35.5, 101),
            (55.4, 150),
            (55.5, 151),
            (125.4, 200),
            (125.5, 201),
            (225.4, 300),
            (225.5, 301),
            (325.4, 500),
        ];
        for (pm, aqi) in edges {
            assert_eq!(pm25_to_aqi(pm), Some(aqi), "PM2.5 {pm}");
        }
        // Truncation: 9.09 is 9.0 → 50, not 51.
        assert_eq!(pm25_to_aqi(9.09), Some(50));
        assert_eq!(pm25_to_aqi(1000.0), Some(500));
        assert_eq!(pm25_to_aqi(-1.0), None);
        assert_eq!(pm25_to_aqi(f64::NAN), None);
        // Monotonic over the whole range.
        let mut last = 0;
        for i in 0..4000 {
            let a = pm25_to_aqi(i as f64 / 10.0).unwrap();
            assert!(a >= last);
            last = a;
        }
    }
}
