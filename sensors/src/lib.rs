//! Sensor sources for sensornet: simulated (seedable), Linux hwmon/thermal zones and CSV
//! replay, plus the bounded on-disk buffer the standalone `sensor` uses while its node is away.

pub mod aqi;
pub mod buffer;
pub mod csv_replay;
pub mod hwmon;
pub mod kind;
pub mod simulated;
pub mod source;

pub use aqi::pm25_to_aqi;
pub use kind::SensorKind;
pub use source::{open_source, Sample, SensorError, Source, SourceSpec};
