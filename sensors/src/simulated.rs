//! Simulated sensors with believable behaviour: a daily temperature cycle with weather fronts,
//! humidity moving against temperature, PM2.5 with weekday rush-hour peaks, slow drift and
//! occasional dropouts. Seeded, so a run can be repeated exactly.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::aqi::pm25_to_aqi;
use crate::kind::SensorKind;
use crate::source::{Sample, SensorError, Source};

const HOUR_MS: f64 = 3_600_000.0;
const DAY_MS: f64 = 24.0 * HOUR_MS;
/// Chance that a tick yields no reading (a radio hiccup).
const DROPOUT: f64 = 0.002;

/// An Ornstein–Uhlenbeck process: noise that wanders but returns to its mean, like weather.
#[derive(Debug, Clone)]
struct Wander {
    x: f64,
    sigma: f64,
    tau_ms: f64,
}

impl Wander {
    fn step(&mut self, rng: &mut StdRng, dt_ms: f64) -> f64 {
        let a = (-dt_ms / self.tau_ms).exp();
        let sd = self.sigma * (1.0 - a * a).sqrt();
        self.x = self.x * a + sd * gaussian(rng);
        self.x
    }
}

fn gaussian(rng: &mut StdRng) -> f64 {
    // Box–Muller; rand's distributions crate would be a dependency for one line.
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A simulated sensor.
pub struct Simulated {
    kind: SensorKind,
    rng: StdRng,
    last_ms: Option<u64>,
    weather: Wander,
    drift: Wander,
    base: f64,
}

impl Simulated {
    /// A sensor of `kind`; its site (base level) and weather follow from `seed`.
    pub fn new(kind: SensorKind, seed: u64) -> Simulated {
        let mut rng = StdRng::seed_from_u64(seed);
        let base = match kind {
            SensorKind::Temperature => rng.random_range(8.0..18.0),
            SensorKind::Humidity => rng.random_range(50.0..70.0),
            SensorKind::AirQuality => rng.random_range(4.0..10.0),
        };
        let (sigma, tau_h) = match kind {
            SensorKind::Temperature => (3.0, 18.0),
            SensorKind::Humidity => (8.0, 10.0),
            SensorKind::AirQuality => (3.0, 6.0),
        };
        Simulated {
            kind,
            rng,
            last_ms: None,
            weather: Wander {
                x: 0.0,
                sigma,
                tau_ms: tau_h * HOUR_MS,
            },
            drift: Wander {
                x: 0.0,
                sigma: 0.5,
                tau_ms: 7.0 * DAY_MS,
            },
            base,
        }
    }

    fn value(&mut self, now_ms: u64) -> f64 {
        let dt = self
            .last_ms
            .map(|l| now_ms.saturating_sub(l) as f64)
            .unwrap_or(0.0);
        self.last_ms = Some(now_ms);
        let weather = self.weather.step(&mut self.rng, dt.max(1.0));
        let drift = self.drift.step(&mut self.rng, dt.max(1.0));
        let hour = (now_ms as f64 % DAY_MS) / HOUR_MS;
        // Warmest mid-afternoon, coldest before dawn.
        let daily = (std::f64::consts::TAU * (hour - 15.0) / 24.0).cos();
        match self.kind {
            SensorKind::Temperature => {
                let v = self.base + 6.0 * daily + weather + drift + 0.1 * gaussian(&mut self.rng);
                v.clamp(-40.0, 50.0)
            }
            SensorKind::Humidity => {
                // Warm afternoons are dry: relative humidity falls as the air warms.
                let v = self.base - 15.0 * daily + weather + drift + 0.5 * gaussian(&mut self.rng);
                v.clamp(5.0, 100.0)
            }
            SensorKind::AirQuality => {
                let day = ((now_ms as f64 / DAY_MS).floor() as i64 + 4).rem_euclid(7); // 0 = Sunday
                let weekday = (1..=5).contains(&day);
                let rush = |h: f64, at: f64| (-(h - at).powi(2) / 2.0).exp();
                let traffic = if weekday {
                    22.0 * rush(hour, 8.0) + 18.0 * rush(hour, 18.0)
                } else {
                    5.0 * rush(hour, 13.0)
                };
                let v =
                    (self.base + traffic + weather + drift) * (0.1 * gaussian(&mut self.rng)).exp();
                v.clamp(0.0, 500.0)
            }
        }
    }
}

impl Source for Simulated {
    fn kind(&self) -> SensorKind {
        self.kind
    }

    fn sample(&mut self, now_ms: u64) -> Result<Option<Sample>, SensorError> {
        let value = (self.value(now_ms) * 100.0).round() / 100.0;
        if self.rng.random_bool(DROPOUT) {
            return Ok(None);
        }
        let aqi = (self.kind == SensorKind::AirQuality)
            .then(|| pm25_to_aqi(value))
            .flatten();
        Ok(Some(Sample {
            time_ms: now_ms,
            value,
            aqi,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u64 = 1_767_225_600_000; // 2026-01-01T00:00Z, a Thursday

    fn week(kind: SensorKind, seed: u64) -> Vec<(u64, f64)> {
        let mut s = Simulated::new(kind, seed);
        (0..7 * 24 * 60)
            .filter_map(|m| {
                let t = START + m * 60_000;
                s.sample(t).unwrap().map(|x| (t, x.value))
            })
            .collect()
    }

    fn hour_of(t: u64) -> u64 {
        (t % 86_400_000) / 3_600_000
    }

    #[test]
    fn a_simulated_week_stays_in_physical_range() {
        for (kind, lo, hi) in [
            (SensorKind::Temperature, -40.0, 50.0),
            (SensorKind::Humidity, 0.0, 100.0),
            (SensorKind::AirQuality, 0.0, 500.0),
        ] {
            for seed in 0..5 {
                let w = week(kind, seed);
                assert!(w.len() > 9900, "dropouts are occasional: {}", w.len());
                assert!(w.len() < 10080, "dropouts happen");
                assert!(
                    w.iter().all(|(_, v)| v.is_finite() && *v >= lo && *v <= hi),
                    "{kind:?} out of range"
                );
                let min = w.iter().map(|x| x.1).fold(f64::MAX, f64::min);
                let max = w.iter().map(|x| x.1).fold(f64::MIN, f64::max);
                assert!(max - min > 2.0, "{kind:?} varies: {min}..{max}");
            }
        }
    }

    #[test]
    fn daily_cycle_and_anticorrelation_show() {
        let mean = |w: &[(u64, f64)], hours: std::ops::Range<u64>| {
            let xs: Vec<f64> = w
                .iter()
                .filter(|(t, _)| hours.contains(&hour_of(*t)))
                .map(|x| x.1)
                .collect();
            xs.iter().sum::<f64>() / xs.len() as f64
        };
        let t = week(SensorKind::Temperature, 42);
        assert!(
            mean(&t, 13..17) > mean(&t, 3..7) + 3.0,
            "afternoons warmer than nights"
        );
        let h = week(SensorKind::Humidity, 42);
        assert!(mean(&h, 13..17) < mean(&h, 3..7), "afternoons drier");
        let a = week(SensorKind::AirQuality, 42);
        // Weekdays only (START is a Thursday: days 0, 1, 4, 5, 6 of the week are weekdays).
        let weekdays: Vec<(u64, f64)> = a
            .iter()
            .copied()
            .filter(|(t, _)| ![2, 3].contains(&((t - START) / 86_400_000)))
            .collect();
        assert!(
            mean(&weekdays, 7..10) > mean(&weekdays, 1..4) * 1.5,
            "rush hour peaks"
        );
    }

    #[test]
    fn seeds_repeat_and_differ() {
        assert_eq!(week(SensorKind::Humidity, 9), week(SensorKind::Humidity, 9));
        assert_ne!(
            week(SensorKind::Humidity, 9),
            week(SensorKind::Humidity, 10)
        );
        let mut s = Simulated::new(SensorKind::AirQuality, 1);
        let x = (0..100)
            .find_map(|i| s.sample(START + i * 1000).unwrap())
            .unwrap();
        assert_eq!(x.aqi, pm25_to_aqi(x.value));
    }
}
