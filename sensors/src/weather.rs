//! The simulated outdoor air of one site: a daily temperature cycle, weather fronts, clouds,
//! a dew point that follows the air mass, and PM2.5 from background haze, weekday traffic and
//! the odd smoke episode. Every simulated sensor kind reads the same `Site`, so a temperature
//! and a humidity sensor with the same seed, sampled at the same times, see the same air.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub(crate) const HOUR_MS: f64 = 3_600_000.0;
pub(crate) const DAY_MS: f64 = 24.0 * HOUR_MS;

/// A standard normal draw (Box–Muller; rand_distr would be a dependency for one line).
pub(crate) fn gaussian(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// An Ornstein–Uhlenbeck process: noise that wanders but is pulled back to zero with time
/// constant `tau`, like weather. Stepped exactly, so any sampling interval gives the same
/// statistics, whether a sensor ticks every 50 ms or a test jumps a minute.
#[derive(Debug, Clone)]
pub(crate) struct Ou {
    x: f64,
    sigma: f64,
    tau_ms: f64,
}

impl Ou {
    /// Starts from the stationary distribution, so a fresh sensor is not always at the mean.
    pub(crate) fn new(rng: &mut impl Rng, sigma: f64, tau_hours: f64) -> Ou {
        Ou {
            x: sigma * gaussian(rng),
            sigma,
            tau_ms: tau_hours * HOUR_MS,
        }
    }

    /// Advances by `dt_ms` and returns the new value.
    pub(crate) fn step(&mut self, rng: &mut impl Rng, dt_ms: f64) -> f64 {
        let a = (-dt_ms / self.tau_ms).exp();
        self.x = self.x * a + self.sigma * (1.0 - a * a).sqrt() * gaussian(rng);
        self.x
    }
}

/// The daily temperature shape: −1 at 05:00 (just before sunrise), +1 at 15:00, half-cosines
/// between, so mornings warm faster than evenings cool as real ones do.
pub(crate) fn diurnal(hour: f64) -> f64 {
    let h = hour.rem_euclid(24.0);
    if (5.0..15.0).contains(&h) {
        -(std::f64::consts::PI * (h - 5.0) / 10.0).cos()
    } else {
        (std::f64::consts::PI * (h - 15.0).rem_euclid(24.0) / 14.0).cos()
    }
}

/// Day of the week of a unix time: 0 = Sunday … 6 = Saturday (1970-01-01 was a Thursday).
pub(crate) fn weekday(now_ms: u64) -> u64 {
    (now_ms / DAY_MS as u64 + 4) % 7
}

/// Saturation vapour pressure shape (Magnus, over water); only ratios are used.
fn magnus(t_c: f64) -> f64 {
    (17.625 * t_c / (243.04 + t_c)).exp()
}

/// The air at one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Air {
    /// Air temperature, °C.
    pub temp_c: f64,
    /// Relative humidity from temperature and dew point, %RH (0–100).
    pub rh: f64,
    /// PM2.5, µg/m³.
    pub pm25: f64,
}

/// One simulated site.
pub(crate) struct Site {
    rng: ChaCha8Rng,
    last_ms: Option<u64>,
    mean_temp: f64,
    day_swing: f64,
    dew_depression: f64,
    pm_background: f64,
    traffic: f64,
    front: Ou,
    gusts: Ou,
    cloud: Ou,
    damp: Ou,
    haze: Ou,
    smoke: f64,
}

impl Site {
    /// The site of `seed`: its climate constants and starting weather.
    pub(crate) fn new(seed: u64) -> Site {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Site {
            mean_temp: rng.random_range(6.0..18.0),
            day_swing: rng.random_range(3.0..6.0),
            dew_depression: rng.random_range(3.0..8.0),
            pm_background: rng.random_range(3.0..8.0),
            traffic: rng.random_range(8.0..25.0),
            // Fronts pass over days; gusts and sun through gaps in minutes.
            front: Ou::new(&mut rng, 3.0, 36.0),
            gusts: Ou::new(&mut rng, 0.3, 0.3),
            cloud: Ou::new(&mut rng, 1.5, 12.0),
            damp: Ou::new(&mut rng, 2.0, 20.0),
            haze: Ou::new(&mut rng, 0.45, 30.0),
            smoke: 0.0,
            last_ms: None,
            rng,
        }
    }

    /// The air at `now_ms`. Every process steps on every call, whatever the caller reads, so
    /// the random stream (and with it the weather) depends only on the seed and the times.
    pub(crate) fn at(&mut self, now_ms: u64) -> Air {
        let dt = self
            .last_ms
            .map_or(0.0, |l| now_ms.saturating_sub(l) as f64);
        self.last_ms = Some(self.last_ms.map_or(now_ms, |l| l.max(now_ms)));
        let rng = &mut self.rng;
        let front = self.front.step(rng, dt);
        let gusts = self.gusts.step(rng, dt);
        let cloud = 1.0 / (1.0 + (-self.cloud.step(rng, dt)).exp());
        let damp = self.damp.step(rng, dt);
        let haze = self.haze.step(rng, dt);
        // Smoke episodes (a bonfire, a wood stove, roadworks): about one every three days,
        // decaying over the better part of an hour.
        let event: f64 = rng.random();
        let size: f64 = rng.random_range(f64::EPSILON..1.0);
        self.smoke *= (-dt / (0.7 * HOUR_MS)).exp();
        if event < 1.0 - (-dt / (72.0 * HOUR_MS)).exp() {
            self.smoke += -size.ln() * 25.0;
        }

        let hour = (now_ms as f64 % DAY_MS) / HOUR_MS;
        let shape = diurnal(hour);
        // Clouds damp the daily swing: overcast days barely warm, clear nights get cold.
        let temp_c = self.mean_temp + self.day_swing * (1.2 - 0.7 * cloud) * shape + front + gusts;
        // The dew point belongs to the air mass, not the hour, so relative humidity falls as
        // the afternoon warms and reaches saturation (dew, fog) on cold nights.
        let dew_c = self.mean_temp + front - self.dew_depression - damp + 3.0 * (cloud - 0.5);
        let rh = (100.0 * magnus(dew_c) / magnus(temp_c)).clamp(0.0, 100.0);

        let g = |at: f64, width: f64| (-((hour - at) / width).powi(2) / 2.0).exp();
        let traffic = match weekday(now_ms) {
            1..=5 => self.traffic * (g(8.0, 1.0) + 0.8 * g(17.5, 1.5) + 0.15 * g(13.0, 4.0)),
            _ => self.traffic * 0.35 * g(13.0, 3.0),
        };
        // Night-time inversions trap what the day emitted; rain (clouds) washes some out.
        let background = self.pm_background * haze.exp() * (1.0 - 0.35 * shape);
        let pm25 = (background + traffic) * (1.2 - 0.4 * cloud) + self.smoke;
        Air { temp_c, rh, pm25 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diurnal_shape_has_its_extremes_at_five_and_fifteen() {
        assert!((diurnal(5.0) + 1.0).abs() < 1e-12);
        assert!((diurnal(15.0) - 1.0).abs() < 1e-12);
        let hours: Vec<f64> = (0..2400).map(|i| f64::from(i) / 100.0).collect();
        let min = hours
            .iter()
            .copied()
            .min_by(|a, b| diurnal(*a).total_cmp(&diurnal(*b)));
        assert_eq!(min, Some(5.0));
        // Continuous across midnight and at the joins.
        for h in [0.0, 5.0, 15.0, 24.0] {
            assert!((diurnal(h - 1e-6) - diurnal(h + 1e-6)).abs() < 1e-4, "{h}");
        }
    }

    #[test]
    fn weekdays() {
        assert_eq!(weekday(0), 4, "1970-01-01 was a Thursday");
        assert_eq!(weekday(1_767_225_600_000), 4, "2026-01-01 is a Thursday");
        assert_eq!(
            weekday(1_767_225_600_000 + 3 * 86_400_000),
            0,
            "then Sunday"
        );
    }

    #[test]
    fn ou_keeps_its_variance_whatever_the_step() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for dt in [1_000.0, 60_000.0, 3_600_000.0] {
            let mut p = Ou::new(&mut rng, 2.0, 0.01);
            let xs: Vec<f64> = (0..20_000).map(|_| p.step(&mut rng, dt)).collect();
            let var = xs.iter().map(|x| x * x).sum::<f64>() / xs.len() as f64;
            assert!((var.sqrt() - 2.0).abs() < 0.4, "dt {dt}: sd {}", var.sqrt());
        }
    }
}
