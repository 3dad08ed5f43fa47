//! The three sensor kinds, their topics and units.

use std::str::FromStr;

/// What a sensor measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SensorKind {
    /// Air temperature in °C.
    Temperature,
    /// Relative humidity in %RH.
    Humidity,
    /// PM2.5 in µg/m³ (with its AQI).
    AirQuality,
}

impl SensorKind {
    /// All kinds.
    pub const ALL: [SensorKind; 3] = [
        SensorKind::Temperature,
        SensorKind::Humidity,
        SensorKind::AirQuality,
    ];

    /// The topic readings go to.
    pub fn topic(&self) -> &'static str {
        match self {
            SensorKind::Temperature => "temperature",
            SensorKind::Humidity => "humidity",
            SensorKind::AirQuality => "air-quality",
        }
    }

    /// The unit of its values.
    pub fn unit(&self) -> &'static str {
        match self {
            SensorKind::Temperature => "°C",
            SensorKind::Humidity => "%RH",
            SensorKind::AirQuality => "µg/m³",
        }
    }
}

impl FromStr for SensorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "temperature" | "temp" => Ok(SensorKind::Temperature),
            "humidity" => Ok(SensorKind::Humidity),
            "air-quality" | "air" | "pm25" => Ok(SensorKind::AirQuality),
            other => Err(format!(
                "unknown sensor kind {other:?}: use temperature, humidity or air-quality"
            )),
        }
    }
}
