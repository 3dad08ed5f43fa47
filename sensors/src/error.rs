//! Why a sensor source could not be opened or read: each message says what went wrong and,
//! unless it is plain (a CSV line holding "abc" for a number), what to do about it.

use crate::kind::SensorKind;

/// Source failures.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// The host has no sysfs sensor of that kind.
    #[error("{}", no_hardware(*.0))]
    NoHardware(SensorKind),
    /// A sensor or replay file could not be read.
    #[error("cannot read {path}: {source}; check that it exists and this user may read it")]
    Read {
        /// The file.
        path: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A sysfs sensor file held something other than a number.
    #[error("{path} holds {text:?}, not a number; point hwmon:PATH at a thermal_zone*/temp, temp*_input, humidity*_input or in_massconcentration_pm2p5_input file")]
    NotANumber {
        /// The file.
        path: String,
        /// What it held (shortened).
        text: String,
    },
    /// A sensor reported a value no real one can have (disconnected sensors report sentinels
    /// such as -127 °C or 65535).
    #[error("{path} reads {value} {unit}, outside the possible {min} to {max}; check that the sensor is connected, or choose another with hwmon:PATH")]
    Implausible {
        /// The file.
        path: String,
        /// The value, in `unit`.
        value: f64,
        /// The kind's unit.
        unit: &'static str,
        /// Lowest possible value.
        min: f64,
        /// Highest possible value.
        max: f64,
    },
    /// A sysfs sensor kept failing.
    #[error("{path} failed {count} times in a row (last: {last}); check the sensor hardware and driver, or use --sensor-source sim")]
    Failing {
        /// The file.
        path: String,
        /// Consecutive failures.
        count: u32,
        /// The last failure.
        last: String,
    },
    /// A replay file is malformed; `line` is 1-based, as an editor shows it.
    #[error("{path} line {line}: {detail}")]
    Csv {
        /// The file as given.
        path: String,
        /// Line number.
        line: u64,
        /// What was wrong there.
        detail: String,
    },
    /// A CSV replay has delivered its last row.
    #[error("the replay file has no more rows; restart the sensor to replay it again")]
    Exhausted,
    /// `--sensor-source` could not be understood.
    #[error("bad sensor source {spec:?}: {why}; use sim, sim:SEED, hwmon, hwmon:PATH or csv:PATH")]
    BadSpec {
        /// What was given.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
}

fn no_hardware(kind: SensorKind) -> &'static str {
    match kind {
        SensorKind::Temperature => {
            "no thermal zone or hwmon temperature sensor found under /sys; use --sensor-source sim"
        }
        SensorKind::Humidity => {
            "no hwmon humidity sensor (humidity*_input) found under /sys; use --sensor-source sim"
        }
        SensorKind::AirQuality => {
            "no IIO PM2.5 sensor (in_massconcentration_pm2p5_input) found under /sys; use --sensor-source sim"
        }
    }
}
