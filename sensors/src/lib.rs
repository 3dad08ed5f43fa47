//! Sensor sources for sensornet — simulated (seedable), Linux sysfs (hwmon, thermal zones,
//! IIO) and CSV replay — and what the standalone `sensor` process needs to feed a node: the
//! bounded on-disk buffer, the node API client and the sample-buffer-deliver loop.

#![warn(missing_docs)]

pub mod api;
pub mod aqi;
pub mod buffer;
pub mod csv_replay;
pub mod error;
pub mod hwmon;
pub mod kind;
pub mod runner;
pub mod simulated;
pub mod source;
pub mod timestamp;
pub mod topic;
mod weather;

pub use aqi::{aqi_category, pm25_to_aqi};
pub use error::SensorError;
pub use kind::{ParseKindError, SensorKind};
pub use source::{open_source, Sample, Source, SourceSpec};
pub use topic::{canonical_topic, Topic, TOPICS};
