//! Simulated sensors: a `weather::Site` seen through a sensor with its own noise, resolution,
//! slow calibration drift and occasional dropouts. Seeded: the same seed and the same sample
//! times give the same readings, so a run (or a test week) can be repeated exactly.
//! Times of day are taken in UTC.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::SensorError;
use crate::kind::SensorKind;
use crate::source::{Sample, Source};
use crate::weather::{gaussian, Ou, Site};

/// Chance that a tick yields no reading (a radio hiccup, a busy bus).
pub const DROPOUT_PROBABILITY: f64 = 0.002;

/// A simulated sensor.
pub struct Simulated {
    kind: SensorKind,
    site: Site,
    /// The sensor's own randomness (noise, drift, dropouts), a separate ChaCha stream of the
    /// same seed, so adding a kind never changes the weather another kind sees.
    rng: ChaCha8Rng,
    drift: Ou,
    last_ms: Option<u64>,
    seed: u64,
}

impl Simulated {
    /// A sensor of `kind` at the site of `seed`.
    pub fn new(kind: SensorKind, seed: u64) -> Simulated {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(1 + kind as u64);
        // Calibration drift: a unit-variance wander over weeks, scaled per kind below.
        let drift = Ou::new(&mut rng, 1.0, 14.0 * 24.0);
        Simulated {
            kind,
            site: Site::new(seed),
            rng,
            drift,
            last_ms: None,
            seed,
        }
    }

    fn measure(&mut self, now_ms: u64) -> f64 {
        let dt = self
            .last_ms
            .map_or(0.0, |l| now_ms.saturating_sub(l) as f64);
        self.last_ms = Some(self.last_ms.map_or(now_ms, |l| l.max(now_ms)));
        let air = self.site.at(now_ms);
        let drift = self.drift.step(&mut self.rng, dt);
        let noise = gaussian(&mut self.rng);
        // (value, steps per unit): each reads like a common part (SHT3x, PMS5003) reports.
        let (v, steps) = match self.kind {
            SensorKind::Temperature => (air.temp_c + 0.05 * noise + 0.2 * drift, 100.0),
            SensorKind::Humidity => (air.rh + 0.8 * noise + 1.5 * drift, 10.0),
            SensorKind::AirQuality => {
                // Optical counters err in proportion to the load.
                let v = air.pm25 * (0.08 * noise).exp() + 0.3 * drift;
                (v, 10.0)
            }
        };
        let (lo, hi) = match self.kind {
            SensorKind::Temperature => (-60.0, 60.0),
            SensorKind::Humidity => (0.0, 100.0),
            SensorKind::AirQuality => (0.0, 1000.0),
        };
        // Dividing by a whole number keeps 2.8 printing as 2.8, not 2.8000000000000003.
        ((v * steps).round() / steps).clamp(lo, hi)
    }
}

impl Source for Simulated {
    fn kind(&self) -> SensorKind {
        self.kind
    }

    fn sample(&mut self, now_ms: u64) -> Result<Option<Sample>, SensorError> {
        let value = self.measure(now_ms);
        // Drawn every tick so a dropout does not shift the stream of later ticks.
        if self.rng.random_bool(DROPOUT_PROBABILITY) {
            return Ok(None);
        }
        Ok(Some(Sample::of(self.kind, now_ms, value)))
    }

    fn describe(&self) -> String {
        format!("simulated {} (seed {})", self.kind, self.seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aqi::pm25_to_aqi;
    use crate::weather::weekday;

    const START: u64 = 1_767_225_600_000; // 2026-01-01T00:00Z, a Thursday
    const MINUTES_IN_WEEK: u64 = 7 * 24 * 60;

    fn week(kind: SensorKind, seed: u64) -> Vec<Sample> {
        let mut s = Simulated::new(kind, seed);
        (0..MINUTES_IN_WEEK)
            .filter_map(|m| s.sample(START + m * 60_000).unwrap())
            .collect()
    }

    fn hour_of(t: u64) -> u64 {
        (t % 86_400_000) / 3_600_000
    }

    fn mean_over(w: &[Sample], keep: impl Fn(u64) -> bool) -> f64 {
        let xs: Vec<f64> = w
            .iter()
            .filter(|s| keep(s.time_ms))
            .map(|s| s.value)
            .collect();
        assert!(!xs.is_empty());
        xs.iter().sum::<f64>() / xs.len() as f64
    }

    #[test]
    fn a_simulated_week_stays_in_physical_range_and_unit() {
        for (kind, lo, hi, unit) in [
            (SensorKind::Temperature, -60.0, 60.0, "°C"),
            (SensorKind::Humidity, 0.0, 100.0, "%RH"),
            (SensorKind::AirQuality, 0.0, 1000.0, "µg/m³"),
        ] {
            assert_eq!(kind.unit(), unit);
            for seed in 0..8 {
                let w = week(kind, seed);
                let n = w.len() as u64;
                assert!(
                    n < MINUTES_IN_WEEK,
                    "{kind} seed {seed}: no dropout in a week"
                );
                assert!(
                    n > MINUTES_IN_WEEK * 99 / 100,
                    "{kind} seed {seed}: dropouts are occasional, got {n} of {MINUTES_IN_WEEK}"
                );
                for s in &w {
                    assert!(
                        s.value.is_finite() && s.value >= lo && s.value <= hi,
                        "{kind} seed {seed}: {} {unit} at {}",
                        s.value,
                        s.time_ms
                    );
                    let (klo, khi) = kind.range();
                    assert!(s.value >= klo && s.value <= khi, "a node would refuse it");
                    match kind {
                        SensorKind::AirQuality => assert_eq!(s.aqi, pm25_to_aqi(s.value)),
                        _ => assert_eq!(s.aqi, None),
                    }
                }
                let min = w.iter().map(|s| s.value).fold(f64::MAX, f64::min);
                let max = w.iter().map(|s| s.value).fold(f64::MIN, f64::max);
                assert!(max - min > 3.0, "{kind} seed {seed} varies: {min}..{max}");
                // Believable, not just legal: a week of outdoor air in a temperate site.
                let mean = w.iter().map(|s| s.value).sum::<f64>() / w.len() as f64;
                let (mlo, mhi) = match kind {
                    SensorKind::Temperature => (-5.0, 28.0),
                    SensorKind::Humidity => (35.0, 98.0),
                    SensorKind::AirQuality => (3.0, 60.0),
                };
                assert!(mean > mlo && mean < mhi, "{kind} seed {seed}: mean {mean}");
            }
        }
    }

    #[test]
    fn readings_move_smoothly_from_minute_to_minute() {
        for seed in 0..4 {
            let w = week(SensorKind::Temperature, seed);
            let jump = w
                .windows(2)
                .filter(|p| p[1].time_ms - p[0].time_ms == 60_000)
                .map(|p| (p[1].value - p[0].value).abs())
                .fold(0.0, f64::max);
            assert!(jump < 1.5, "seed {seed}: a {jump} °C jump in one minute");
        }
    }

    #[test]
    fn afternoons_are_warmer_and_drier_than_nights() {
        for seed in 0..8 {
            let t = week(SensorKind::Temperature, seed);
            let (day, night) = (
                mean_over(&t, |t| (13..17).contains(&hour_of(t))),
                mean_over(&t, |t| (3..7).contains(&hour_of(t))),
            );
            assert!(
                day > night + 2.0,
                "seed {seed}: afternoon {day} vs night {night}"
            );
            let h = week(SensorKind::Humidity, seed);
            let (day, night) = (
                mean_over(&h, |t| (13..17).contains(&hour_of(t))),
                mean_over(&h, |t| (3..7).contains(&hour_of(t))),
            );
            assert!(
                day + 5.0 < night,
                "seed {seed}: afternoon {day} %RH vs night {night}"
            );
        }
    }

    #[test]
    fn the_coldest_hour_is_around_dawn_and_the_warmest_mid_afternoon() {
        let mut by_hour = [(0.0, 0u32); 24];
        for seed in 0..8 {
            for s in week(SensorKind::Temperature, seed) {
                let h = hour_of(s.time_ms) as usize;
                by_hour[h].0 += s.value;
                by_hour[h].1 += 1;
            }
        }
        let mean = |h: usize| by_hour[h].0 / f64::from(by_hour[h].1);
        let coldest = (0..24).min_by(|a, b| mean(*a).total_cmp(&mean(*b)));
        let warmest = (0..24).max_by(|a, b| mean(*a).total_cmp(&mean(*b)));
        assert!(matches!(coldest, Some(3..=6)), "coldest hour {coldest:?}");
        assert!(matches!(warmest, Some(13..=16)), "warmest hour {warmest:?}");
    }

    #[test]
    fn humidity_moves_against_temperature_at_the_same_site() {
        let (t, h) = (
            week(SensorKind::Temperature, 11),
            week(SensorKind::Humidity, 11),
        );
        let pairs: Vec<(f64, f64)> = t
            .iter()
            .filter_map(|a| {
                h.iter()
                    .find(|b| b.time_ms == a.time_ms)
                    .map(|b| (a.value, b.value))
            })
            .take(2000)
            .collect();
        let n = pairs.len() as f64;
        let (mt, mh) = (
            pairs.iter().map(|p| p.0).sum::<f64>() / n,
            pairs.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let cov = pairs.iter().map(|p| (p.0 - mt) * (p.1 - mh)).sum::<f64>();
        assert!(cov < 0.0, "humidity falls as temperature rises");
    }

    #[test]
    fn pm25_peaks_in_weekday_rush_hours() {
        for seed in 0..8 {
            let a = week(SensorKind::AirQuality, seed);
            let weekday = |t: u64| (1..=5).contains(&weekday(t));
            let morning = mean_over(&a, |t| weekday(t) && (7..10).contains(&hour_of(t)));
            let evening = mean_over(&a, |t| weekday(t) && (16..20).contains(&hour_of(t)));
            let small_hours = mean_over(&a, |t| weekday(t) && (1..4).contains(&hour_of(t)));
            let weekend_morning = mean_over(&a, |t| !weekday(t) && (7..10).contains(&hour_of(t)));
            assert!(
                morning > small_hours * 1.4 && evening > small_hours * 1.2,
                "seed {seed}: rush {morning}/{evening} vs night {small_hours}"
            );
            assert!(
                morning > weekend_morning,
                "seed {seed}: weekday {morning} vs weekend {weekend_morning}"
            );
        }
    }

    #[test]
    fn seeds_repeat_and_differ() {
        for kind in SensorKind::ALL {
            assert_eq!(week(kind, 9), week(kind, 9), "{kind}");
            assert_ne!(week(kind, 9), week(kind, 10), "{kind}");
        }
        // Two sensors of one seed sampled at the same times agree, dropouts included.
        let times: Vec<u64> = (0..50).map(|i| START + i * 1000).collect();
        let mut a = Simulated::new(SensorKind::Temperature, 4);
        let mut b = Simulated::new(SensorKind::Temperature, 4);
        let xs: Vec<_> = times.iter().map(|t| a.sample(*t).unwrap()).collect();
        let ys: Vec<_> = times.iter().map(|t| b.sample(*t).unwrap()).collect();
        assert_eq!(xs, ys);
    }

    #[test]
    fn odd_times_do_not_break_it() {
        let mut s = Simulated::new(SensorKind::AirQuality, 2);
        for t in [START, START, START - 5_000, 0, u64::MAX / 2, START + 1] {
            if let Some(x) = s.sample(t).unwrap() {
                assert!(x.value.is_finite() && x.value >= 0.0, "{t}: {}", x.value);
                assert_eq!(x.time_ms, t);
            }
        }
    }
}
