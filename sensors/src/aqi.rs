//! US EPA Air Quality Index from PM2.5, with the breakpoint table of the 2024 revision.

/// (PM2.5 low, PM2.5 high) in tenths of µg/m³, (AQI low, AQI high), from 40 CFR 58 App. G
/// as revised in 2024. Tenths keep the table exact: 35.4 is 354, not 35.39999….
const BREAKPOINTS: [(u32, u32, u16, u16); 6] = [
    (0, 90, 0, 50),
    (91, 354, 51, 100),
    (355, 554, 101, 150),
    (555, 1254, 151, 200),
    (1255, 2254, 201, 300),
    (2255, 3254, 301, 500),
];

/// The AQI of a PM2.5 concentration in µg/m³: truncated to 0.1 as EPA does, then linear within
/// its breakpoint row, rounded to the nearest integer. Above the table's top (325.4 µg/m³)
/// the index is capped at 500, the top of the scale. `None` for negative or non-finite input.
///
/// EPA defines the AQI on 24-hour averages; applied to one reading it is the "instant" index
/// consumer sensors show.
pub fn pm25_to_aqi(pm25: f64) -> Option<u16> {
    if !pm25.is_finite() || pm25 < 0.0 {
        return None;
    }
    // The epsilon keeps a value printed as 35.4 (stored as 35.39999…) at 354 tenths.
    let tenths = (pm25 * 10.0 + 1e-6).floor();
    if tenths > f64::from(BREAKPOINTS[5].1) {
        return Some(500);
    }
    let c = tenths as u32;
    let &(lo, hi, ilo, ihi) = BREAKPOINTS.iter().find(|&&(_, hi, _, _)| c <= hi)?;
    let aqi = f64::from(ihi - ilo) / f64::from(hi - lo) * f64::from(c - lo) + f64::from(ilo);
    Some(aqi.round() as u16)
}

/// The EPA category name of an AQI value ("Good" … "Hazardous").
pub fn aqi_category(aqi: u16) -> &'static str {
    match aqi {
        0..=50 => "Good",
        51..=100 => "Moderate",
        101..=150 => "Unhealthy for Sensitive Groups",
        151..=200 => "Unhealthy",
        201..=300 => "Very Unhealthy",
        _ => "Hazardous",
    }
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
    }

    #[test]
    fn truncates_interpolates_and_caps() {
        // Truncation, not rounding: 9.09 is 9.0 → 50, 35.49 is 35.4 → 100.
        assert_eq!(pm25_to_aqi(9.09), Some(50));
        assert_eq!(pm25_to_aqi(35.49), Some(100));
        // Mid-row: 12.0 → (100-51)/(35.4-9.1)·(12.0-9.1)+51 = 56.4 → 56.
        assert_eq!(pm25_to_aqi(12.0), Some(56));
        assert_eq!(pm25_to_aqi(4.5), Some(25));
        assert_eq!(pm25_to_aqi(325.49), Some(500));
        assert_eq!(pm25_to_aqi(1000.0), Some(500), "capped above the table");
        assert_eq!(pm25_to_aqi(-0.1), None);
        assert_eq!(pm25_to_aqi(f64::NAN), None);
        assert_eq!(pm25_to_aqi(f64::INFINITY), None);
        let mut last = 0;
        for i in 0..5000 {
            let a = pm25_to_aqi(f64::from(i) / 10.0).unwrap();
            assert!(a >= last, "monotonic at {i}");
            assert!(a <= 500);
            last = a;
        }
    }

    #[test]
    fn categories() {
        assert_eq!(aqi_category(50), "Good");
        assert_eq!(aqi_category(51), "Moderate");
        assert_eq!(aqi_category(150), "Unhealthy for Sensitive Groups");
        assert_eq!(aqi_category(500), "Hazardous");
    }
}
