//! The three sensor kinds: their names, topics, units and physically possible ranges.

use std::fmt;
use std::str::FromStr;

use crate::topic::{self, Topic, TOPICS};

/// What a sensor measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SensorKind {
    /// Air temperature in °C.
    Temperature,
    /// Relative humidity in %RH.
    Humidity,
    /// PM2.5 mass concentration in µg/m³ (readings also carry its US EPA AQI).
    AirQuality,
}

/// A sensor kind name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sensor kind {0:?}: use temperature, humidity or air-quality")]
pub struct ParseKindError(pub String);

impl SensorKind {
    /// All kinds, in topic order.
    pub const ALL: [SensorKind; 3] = [
        SensorKind::Temperature,
        SensorKind::Humidity,
        SensorKind::AirQuality,
    ];

    /// Its entry in the topic table: name, aliases, unit and range.
    pub fn info(&self) -> &'static Topic {
        match self {
            SensorKind::Temperature => &TOPICS[0],
            SensorKind::Humidity => &TOPICS[1],
            SensorKind::AirQuality => &TOPICS[2],
        }
    }

    /// The gossipsub topic its readings go to.
    pub fn topic(&self) -> &'static str {
        self.info().name
    }

    /// The unit of its values.
    pub fn unit(&self) -> &'static str {
        self.info().unit
    }

    /// The values a node accepts for this kind (inclusive); the same limits as the node's
    /// validation, so a source can refuse a reading before it is sent and rejected.
    pub fn range(&self) -> (f64, f64) {
        let t = self.info();
        (t.min, t.max)
    }
}

impl fmt::Display for SensorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.topic())
    }
}

impl FromStr for SensorKind {
    type Err = ParseKindError;

    /// Accepts the topic names and their aliases (`temp`, `rh`, `aq`, `pm25`, ...), ignoring
    /// case and surrounding space.
    fn from_str(s: &str) -> Result<Self, ParseKindError> {
        topic::lookup(&s.trim().to_ascii_lowercase())
            .map(|t| t.kind)
            .ok_or_else(|| ParseKindError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_topics_and_units() {
        for (name, kind, topic, unit) in [
            ("temperature", SensorKind::Temperature, "temperature", "°C"),
            ("temp", SensorKind::Temperature, "temperature", "°C"),
            ("humidity", SensorKind::Humidity, "humidity", "%RH"),
            (
                "air-quality",
                SensorKind::AirQuality,
                "air-quality",
                "µg/m³",
            ),
            (
                " Air-Quality ",
                SensorKind::AirQuality,
                "air-quality",
                "µg/m³",
            ),
        ] {
            let k: SensorKind = name.parse().unwrap();
            assert_eq!(k, kind);
            assert_eq!((k.topic(), k.unit()), (topic, unit));
            assert_eq!(k.to_string().parse::<SensorKind>().unwrap(), k);
        }
        for t in &TOPICS {
            for a in t.aliases {
                let k: SensorKind = a.parse().unwrap();
                assert_eq!(k.info(), t, "{a}");
                assert_eq!(a.to_ascii_uppercase().parse::<SensorKind>().unwrap(), k);
            }
        }
        let e = "pressure".parse::<SensorKind>().unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown sensor kind \"pressure\": use temperature, humidity or air-quality"
        );
    }
}
