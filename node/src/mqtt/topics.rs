//! The mapping between MQTT topics and sensornet: `sensornet/<topic>/<source>` is a source's
//! readings on a topic (aliases as on the CLI); any other topic without wildcards is the raw
//! pubsub topic of that name. Also the reading payloads a client may publish.

use serde::Deserialize;

use crate::publish::NewReading;
use crate::reading::canonical_topic;

/// First level of every reading topic.
pub const PREFIX: &str = "sensornet";

/// Topic and filter refusals.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TopicError {
    #[error("{0:?} is not a valid MQTT topic name (no wildcards, no empty name)")]
    BadName(String),
    #[error(
        "{0:?}: a reading topic is sensornet/<topic>/<source>, e.g. sensornet/temperature/kitchen"
    )]
    NoSource(String),
    #[error("{0:?}: topics starting with $ are reserved")]
    Reserved(String),
    #[error("{0:?} is not a valid MQTT topic filter")]
    BadFilter(String),
    #[error("{0:?}: wildcards are served under sensornet/ only; raw pubsub topics are subscribed by exact name")]
    RawWildcard(String),
}

/// A PUBLISH payload that is no reading.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error("the payload is not UTF-8 text")]
    NotText,
    #[error(
        "payload {0:?} is not a number: send a decimal such as 21.5, or JSON {{\"value\":21.5}}"
    )]
    NotNumber(String),
    #[error("JSON payload: {0}; send {{\"value\":25.5}} with optional unit, time (unix ms), aqi")]
    BadJson(String),
}

/// Where a PUBLISH goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A reading of `source` on canonical `topic`.
    Reading {
        /// Canonical topic.
        topic: String,
        /// Source id.
        source: String,
    },
    /// An opaque payload on the pubsub topic of that name.
    Raw(String),
}

/// Maps a PUBLISH topic name.
pub fn target(name: &str) -> Result<Target, TopicError> {
    if name.is_empty() || !rumqttc::mqttbytes::valid_topic(name) {
        return Err(TopicError::BadName(name.to_string()));
    }
    if name.starts_with('$') {
        return Err(TopicError::Reserved(name.to_string()));
    }
    let Some(rest) = name.strip_prefix("sensornet/") else {
        return Ok(Target::Raw(name.to_string()));
    };
    // The source is everything after the topic level: sensor ids may contain '/'.
    match rest.split_once('/') {
        Some((topic, source)) if !topic.is_empty() && !source.is_empty() => Ok(Target::Reading {
            topic: canonical_topic(topic).to_string(),
            source: source.to_string(),
        }),
        _ => Err(TopicError::NoSource(name.to_string())),
    }
}

/// The MQTT topic a reading is delivered on.
pub fn reading_topic(topic: &str, source: &str) -> String {
    format!("{PREFIX}/{topic}/{source}")
}

/// What a subscription filter selects.
#[derive(Debug, Clone, PartialEq)]
pub enum Selects {
    /// Readings: `topic` is the canonical topic when the filter names one, `None` when the
    /// topic level is a wildcard.
    Readings {
        /// Canonical topic, if fixed.
        topic: Option<String>,
    },
    /// The raw pubsub topic of that name.
    Raw(String),
}

/// A client's subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The filter as the client sent it (UNSUBSCRIBE names it so).
    pub text: String,
    /// The filter matched against reading topics, its topic level canonical (`temp` →
    /// `temperature`).
    pub matcher: String,
    /// QoS granted.
    pub qos: u8,
    /// What it selects.
    pub selects: Selects,
}

impl Filter {
    /// Parses a SUBSCRIBE filter; QoS 2 is granted as 1.
    pub fn parse(text: &str, qos: u8) -> Result<Filter, TopicError> {
        if text.is_empty() || !rumqttc::mqttbytes::valid_filter(text) {
            return Err(TopicError::BadFilter(text.to_string()));
        }
        if text.starts_with('$') {
            return Err(TopicError::Reserved(text.to_string()));
        }
        let qos = qos.min(1);
        let levels: Vec<&str> = text.split('/').collect();
        let first = levels[0];
        if first == PREFIX || first == "+" || first == "#" {
            let (topic, matcher) = match levels.get(1) {
                Some(&t) if t != "+" && t != "#" && first == PREFIX => {
                    let canon = canonical_topic(t).to_string();
                    let mut l: Vec<&str> = levels.clone();
                    l[1] = &canon;
                    (Some(canon.clone()), l.join("/"))
                }
                _ => (None, text.to_string()),
            };
            return Ok(Filter {
                text: text.to_string(),
                matcher,
                qos,
                selects: Selects::Readings { topic },
            });
        }
        if rumqttc::mqttbytes::has_wildcards(text) {
            return Err(TopicError::RawWildcard(text.to_string()));
        }
        Ok(Filter {
            text: text.to_string(),
            matcher: text.to_string(),
            qos,
            selects: Selects::Raw(text.to_string()),
        })
    }

    /// Whether a reading of (`topic`, `source`) matches.
    pub fn matches_reading(&self, topic: &str, source: &str) -> bool {
        matches!(self.selects, Selects::Readings { .. })
            && rumqttc::mqttbytes::matches(&reading_topic(topic, source), &self.matcher)
    }

    /// Whether a reading topic can match at all (to pick the bus topics to follow).
    pub fn covers_topic(&self, topic: &str) -> bool {
        match &self.selects {
            Selects::Readings { topic: Some(t) } => t == topic,
            Selects::Readings { topic: None } => true,
            Selects::Raw(_) => false,
        }
    }
}

/// A JSON reading payload: `{"value":25.5,"unit":"°C","time":1764000000000}`.
#[derive(Debug, Deserialize)]
struct JsonPayload {
    value: f64,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    time: Option<u64>,
    #[serde(default)]
    aqi: Option<u16>,
}

/// Builds the reading a PUBLISH asks for: the payload is a plain decimal or a JSON object;
/// the node's checks (range, unit, names) run in the publisher, as for `node pub`.
pub fn new_reading(topic: &str, source: &str, payload: &[u8]) -> Result<NewReading, PayloadError> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| PayloadError::NotText)?
        .trim();
    let mut new = NewReading {
        topic: topic.to_string(),
        source: Some(source.to_string()),
        ..NewReading::default()
    };
    if text.starts_with('{') {
        let p: JsonPayload =
            serde_json::from_str(text).map_err(|e| PayloadError::BadJson(e.to_string()))?;
        new.value = p.value;
        new.unit = p.unit;
        new.time = p.time;
        new.aqi = p.aqi;
    } else {
        new.value = text
            .parse()
            .map_err(|_| PayloadError::NotNumber(text.chars().take(40).collect()))?;
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_to_readings_or_raw() {
        assert_eq!(
            target("sensornet/temp/kitchen/1"),
            Ok(Target::Reading {
                topic: "temperature".into(),
                source: "kitchen/1".into()
            })
        );
        assert!(matches!(
            target("sensornet/temperature"),
            Err(TopicError::NoSource(_))
        ));
        assert!(target("sensornet/+/x").is_err());
        assert!(target("$SYS/x").is_err());
        assert_eq!(target("chat"), Ok(Target::Raw("chat".into())));
    }

    #[test]
    fn filters_match_with_wildcards_and_aliases() {
        let f = Filter::parse("sensornet/temp/+", 2).unwrap();
        assert_eq!(f.qos, 1);
        assert!(f.matches_reading("temperature", "a"));
        assert!(!f.matches_reading("humidity", "a"));
        assert!(!f.matches_reading("temperature", "a/b"));
        assert!(f.covers_topic("temperature") && !f.covers_topic("humidity"));
        let all = Filter::parse("sensornet/#", 0).unwrap();
        assert!(all.matches_reading("humidity", "x/y"));
        let by_source = Filter::parse("sensornet/+/dev1", 0).unwrap();
        assert!(by_source.matches_reading("air-quality", "dev1"));
        assert!(!by_source.matches_reading("air-quality", "dev2"));
        assert!(Filter::parse("#", 0)
            .unwrap()
            .matches_reading("humidity", "z"));
        assert_eq!(
            Filter::parse("chat", 0).unwrap().selects,
            Selects::Raw("chat".into())
        );
        assert!(matches!(
            Filter::parse("chat/+", 0),
            Err(TopicError::RawWildcard(_))
        ));
        assert!(Filter::parse("a/#/b", 0).is_err());
    }

    #[test]
    fn payloads_are_decimal_or_json() {
        let n = new_reading("temperature", "s", b" 25.5\n").unwrap();
        assert_eq!((n.value, n.source.as_deref()), (25.5, Some("s")));
        let j = new_reading(
            "temperature",
            "s",
            br#"{"value":21,"unit":"\u00b0C","time":1764000000000}"#,
        )
        .unwrap();
        assert_eq!((j.value, j.time), (21.0, Some(1_764_000_000_000)));
        assert_eq!(j.unit.as_deref(), Some("°C"));
        assert!(new_reading("temperature", "s", b"warm").is_err());
        assert!(new_reading("temperature", "s", b"{\"v\":1}").is_err());
        assert!(new_reading("temperature", "s", &[0xff, 0xfe]).is_err());
    }
}
