//! The `Source` trait, the source specification parsed from `--sensor-source`, and errors.

use std::path::PathBuf;
use std::str::FromStr;

use crate::kind::SensorKind;

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Measurement time, unix ms.
    pub time_ms: u64,
    /// Value in the kind's unit.
    pub value: f64,
    /// AQI, for air quality (value is PM2.5).
    pub aqi: Option<u16>,
}

/// Source failures; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error(
        "no thermal zone or hwmon temperature sensor found under /sys; use --sensor-source sim"
    )]
    NoHardware,
    #[error("cannot read {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("{path} line {line}: {detail}")]
    Csv {
        path: String,
        line: usize,
        detail: String,
    },
    #[error("the replay file has no more rows")]
    Exhausted,
    #[error("bad sensor source {0:?}: use sim, sim:SEED, hwmon, hwmon:PATH or csv:PATH")]
    BadSpec(String),
    #[error("hwmon only measures temperature; use --sensor-source sim for {0}")]
    Unsupported(&'static str),
}

/// Where readings come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// A simulation, repeatable for a seed.
    Simulated {
        /// RNG seed.
        seed: u64,
    },
    /// Linux thermal zone / hwmon.
    Hwmon {
        /// A specific file; the first one found when `None`.
        path: Option<PathBuf>,
    },
    /// Replay of a CSV file.
    Csv {
        /// The file.
        path: PathBuf,
    },
}

impl FromStr for SourceSpec {
    type Err = SensorError;
    fn from_str(s: &str) -> Result<Self, SensorError> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        match (kind, arg) {
            ("sim", None) => Ok(SourceSpec::Simulated {
                seed: rand::random(),
            }),
            ("sim", Some(seed)) => seed
                .parse()
                .map(|seed| SourceSpec::Simulated { seed })
                .map_err(|_| SensorError::BadSpec(s.into())),
            ("hwmon", p) => Ok(SourceSpec::Hwmon {
                path: p.map(PathBuf::from),
            }),
            ("csv", Some(p)) if !p.is_empty() => Ok(SourceSpec::Csv {
                path: PathBuf::from(p),
            }),
            _ => Err(SensorError::BadSpec(s.into())),
        }
    }
}

/// Something that yields samples.
pub trait Source: Send {
    /// What it measures.
    fn kind(&self) -> SensorKind;
    /// The sample at `now_ms`; `Ok(None)` is a dropout (no reading this tick).
    fn sample(&mut self, now_ms: u64) -> Result<Option<Sample>, SensorError>;
}

/// Opens a source of `kind` as `spec` says.
pub fn open_source(kind: SensorKind, spec: &SourceSpec) -> Result<Box<dyn Source>, SensorError> {
    Ok(match spec {
        SourceSpec::Simulated { seed } => Box::new(crate::simulated::Simulated::new(kind, *seed)),
        SourceSpec::Hwmon { path } => {
            if kind != SensorKind::Temperature {
                return Err(SensorError::Unsupported(kind.topic()));
            }
            Box::new(crate::hwmon::Hwmon::open(path.clone())?)
        }
        SourceSpec::Csv { path } => Box::new(crate::csv_replay::CsvReplay::open(kind, path)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(
            "sim:7".parse::<SourceSpec>().unwrap(),
            SourceSpec::Simulated { seed: 7 }
        );
        assert!(matches!(
            "hwmon".parse::<SourceSpec>().unwrap(),
            SourceSpec::Hwmon { path: None }
        ));
        assert!(matches!(
            "csv:/x.csv".parse::<SourceSpec>().unwrap(),
            SourceSpec::Csv { .. }
        ));
        assert!("csv:".parse::<SourceSpec>().is_err());
        assert!("radio".parse::<SourceSpec>().is_err());
    }
}
