//! The one table of the standard sensor topics: canonical names, aliases, units and the
//! plausible ranges a node accepts. The node's validation and the sensor kinds both read it.

use crate::kind::SensorKind;

/// What sensornet knows about one of the standard sensor topics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Topic {
    /// The sensor kind whose readings go to this topic.
    pub kind: SensorKind,
    /// Canonical topic name.
    pub name: &'static str,
    /// Other names accepted for it (exact, lowercase).
    pub aliases: &'static [&'static str],
    /// The unit every reading of this topic carries.
    pub unit: &'static str,
    /// Lowest plausible value (inclusive).
    pub min: f64,
    /// Highest plausible value (inclusive).
    pub max: f64,
}

/// The three sensor topics, in [`SensorKind::ALL`] order. Ranges are generous physical
/// limits, not comfort zones, so a CPU's hwmon sensor or a wildfire's smoke still fits.
pub const TOPICS: [Topic; 3] = [
    Topic {
        kind: SensorKind::Temperature,
        name: "temperature",
        aliases: &["temp"],
        unit: "°C",
        // Down to the coldest air ever measured; up to hot hardware (hwmon reads CPUs).
        min: -90.0,
        max: 150.0,
    },
    Topic {
        kind: SensorKind::Humidity,
        name: "humidity",
        aliases: &["hum", "rh"],
        unit: "%RH",
        min: 0.0,
        max: 100.0,
    },
    Topic {
        kind: SensorKind::AirQuality,
        name: "air-quality",
        aliases: &["air", "airquality", "air_quality", "aq", "pm25", "pm2.5"],
        unit: "µg/m³",
        min: 0.0,
        max: 2000.0,
    },
];

/// The standard topic called `name` (its canonical name or an alias, matched exactly).
pub fn lookup(name: &str) -> Option<&'static Topic> {
    TOPICS
        .iter()
        .find(|t| t.name == name || t.aliases.contains(&name))
}

/// Maps an alias (`temp`) to its canonical topic name; any other name passes through.
pub fn canonical_topic(name: &str) -> &str {
    lookup(name).map_or(name, |t| t.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_kind_order_and_names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for (t, kind) in TOPICS.iter().zip(SensorKind::ALL) {
            assert_eq!(t.kind, kind);
            assert!(t.min < t.max, "{}", t.name);
            for n in std::iter::once(&t.name).chain(t.aliases) {
                assert!(seen.insert(*n), "{n} names two topics");
                assert_eq!(*n, n.trim().to_ascii_lowercase(), "aliases are lowercase");
            }
        }
    }

    #[test]
    fn kinds_agree_with_the_table() {
        for t in &TOPICS {
            assert_eq!(t.kind.info(), t);
            assert_eq!((t.kind.topic(), t.kind.unit()), (t.name, t.unit));
            assert_eq!(t.kind.range(), (t.min, t.max));
        }
    }

    #[test]
    fn every_alias_maps_to_its_topic() {
        for t in &TOPICS {
            assert_eq!(canonical_topic(t.name), t.name);
            for a in t.aliases {
                assert_eq!(canonical_topic(a), t.name, "{a}");
                assert_eq!(lookup(a), Some(t));
            }
        }
        // The union of what the node and the sensor kinds accepted before the table.
        for (alias, name) in [
            ("temp", "temperature"),
            ("hum", "humidity"),
            ("rh", "humidity"),
            ("air", "air-quality"),
            ("airquality", "air-quality"),
            ("air_quality", "air-quality"),
            ("aq", "air-quality"),
            ("pm25", "air-quality"),
            ("pm2.5", "air-quality"),
        ] {
            assert_eq!(canonical_topic(alias), name, "{alias}");
            assert_eq!(
                alias.parse::<SensorKind>().unwrap().topic(),
                name,
                "{alias}"
            );
        }
        assert_eq!(canonical_topic("pressure"), "pressure");
        assert!(lookup("pressure").is_none());
    }
}
