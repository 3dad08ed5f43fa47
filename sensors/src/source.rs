//! The `Source` trait every sensor implements, the source specification parsed from
//! `--sensor-source` / `--source`, and `open_source`, which turns the two into a sensor.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::aqi::pm25_to_aqi;
use crate::error::SensorError;
use crate::kind::SensorKind;

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Measurement time, unix milliseconds.
    pub time_ms: u64,
    /// The value in the kind's unit.
    pub value: f64,
    /// The US EPA AQI of `value`, for air quality only (`value` is then PM2.5 in µg/m³).
    pub aqi: Option<u16>,
}

impl Sample {
    /// A sample of `kind`, with the AQI filled in when the kind is air quality.
    pub fn of(kind: SensorKind, time_ms: u64, value: f64) -> Sample {
        let aqi = match kind {
            SensorKind::AirQuality => pm25_to_aqi(value),
            _ => None,
        };
        Sample {
            time_ms,
            value,
            aqi,
        }
    }
}

/// Something that yields samples of one kind.
pub trait Source: Send {
    /// What it measures.
    fn kind(&self) -> SensorKind;
    /// The sample for the tick at `now_ms` (unix ms). `Ok(None)` is a dropout: no reading this
    /// tick, try again next one. A CSV replay takes `time_ms` from its file and answers
    /// `Err(SensorError::Exhausted)` after its last row.
    fn sample(&mut self, now_ms: u64) -> Result<Option<Sample>, SensorError>;
    /// Which sensor this is, for a log line ("sysfs coretemp Package id 0 (/sys/…)").
    fn describe(&self) -> String {
        self.kind().to_string()
    }
}

/// Where readings come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// A simulation, repeatable for a seed.
    Simulated {
        /// RNG seed: same seed and same sample times give the same values.
        seed: u64,
    },
    /// Linux sysfs: thermal zones and hwmon (temperature, humidity) or IIO (PM2.5).
    Hwmon {
        /// A specific file; the first working one of the kind when `None`.
        path: Option<PathBuf>,
    },
    /// Replay of a CSV file (see `csv_replay` for the format).
    Csv {
        /// The file.
        path: PathBuf,
    },
}

impl FromStr for SourceSpec {
    type Err = SensorError;

    /// `sim` (random seed), `sim:SEED`, `hwmon`, `hwmon:PATH` or `csv:PATH`.
    fn from_str(s: &str) -> Result<Self, SensorError> {
        let bad = |why: &str| SensorError::BadSpec {
            spec: s.to_string(),
            why: why.to_string(),
        };
        let t = s.trim();
        let (scheme, arg) = match t.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (t, None),
        };
        match (scheme.to_ascii_lowercase().as_str(), arg) {
            ("sim", None) => Ok(SourceSpec::Simulated {
                seed: rand::random(),
            }),
            ("sim", Some(seed)) => seed
                .trim()
                .parse()
                .map(|seed| SourceSpec::Simulated { seed })
                .map_err(|_| bad(&format!("the seed {seed:?} is not a whole number"))),
            ("hwmon", None) => Ok(SourceSpec::Hwmon { path: None }),
            ("hwmon", Some(p)) if !p.is_empty() => Ok(SourceSpec::Hwmon {
                path: Some(PathBuf::from(p)),
            }),
            ("hwmon", Some(_)) => Err(bad("hwmon: needs a file after the colon")),
            ("csv", Some(p)) if !p.is_empty() => Ok(SourceSpec::Csv {
                path: PathBuf::from(p),
            }),
            ("csv", _) => Err(bad("csv needs a file, as in csv:readings.csv")),
            _ => Err(bad("unknown source type")),
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Simulated { seed } => write!(f, "sim:{seed}"),
            SourceSpec::Hwmon { path: None } => f.write_str("hwmon"),
            SourceSpec::Hwmon { path: Some(p) } => write!(f, "hwmon:{}", p.display()),
            SourceSpec::Csv { path } => write!(f, "csv:{}", path.display()),
        }
    }
}

/// Opens a source of `kind` as `spec` says. Hardware is probed and CSV files are checked in
/// full here, so a bad source fails at start rather than at the first tick.
pub fn open_source(kind: SensorKind, spec: &SourceSpec) -> Result<Box<dyn Source>, SensorError> {
    Ok(match spec {
        SourceSpec::Simulated { seed } => Box::new(crate::simulated::Simulated::new(kind, *seed)),
        SourceSpec::Hwmon { path } => Box::new(crate::hwmon::Hwmon::open(kind, path.as_deref())?),
        SourceSpec::Csv { path } => Box::new(crate::csv_replay::CsvReplay::open(kind, path)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for s in ["sim:7", "hwmon", "hwmon:/sys/x/temp", "csv:/data/r.csv"] {
            let spec: SourceSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
        assert_eq!(
            "sim:7".parse::<SourceSpec>().unwrap(),
            SourceSpec::Simulated { seed: 7 }
        );
        assert!(matches!(
            "sim".parse::<SourceSpec>().unwrap(),
            SourceSpec::Simulated { .. }
        ));
        assert_eq!(
            "csv:C:relative.csv".parse::<SourceSpec>().unwrap(),
            SourceSpec::Csv {
                path: "C:relative.csv".into()
            },
            "only the first colon separates"
        );
        for bad in ["csv:", "csv", "radio", "sim:x", "sim:-1", "hwmon:"] {
            let e = bad.parse::<SourceSpec>().unwrap_err().to_string();
            assert!(e.contains("use sim, sim:SEED"), "{bad}: {e}");
        }
    }

    #[test]
    fn open_source_dispatches_and_fails_clearly() {
        let mut s = open_source(SensorKind::Humidity, &SourceSpec::Simulated { seed: 1 }).unwrap();
        assert_eq!(s.kind(), SensorKind::Humidity);
        assert_eq!(s.describe(), "simulated humidity (seed 1)");
        assert!((0..10).any(|i| s.sample(i * 1000).unwrap().is_some()));
        let e = open_source(
            SensorKind::Temperature,
            &SourceSpec::Csv {
                path: "/nonexistent/r.csv".into(),
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.starts_with("cannot read /nonexistent/r.csv:"), "{e}");
    }
}
