//! The Reading block: fields, validation, DAG-CBOR encoding and its CID (pure, no IO).

use cid::Cid;
use multihash::Multihash;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Multicodec code of DAG-CBOR.
pub const DAG_CBOR: u64 = 0x71;
/// Multicodec code of raw bytes.
pub const RAW: u64 = 0x55;
/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;
/// Largest block (and gossip message) accepted, as go-libp2p-pubsub allows.
pub const MAX_BLOCK_SIZE: usize = 1 << 20;

const MAX_NAME_LEN: usize = 128;
const MAX_UNIT_LEN: usize = 16;
/// Most heads one reading joins besides `prev` (concurrent writers of one source).
pub const MAX_JOINS: usize = 32;

/// Why a reading was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReadingError {
    #[error("value {0} is not a finite number; send a decimal such as 21.5")]
    NotFinite(f64),
    #[error("{topic} value {value} {unit} is outside the plausible range {min}..={max} {unit}; check the sensor or its unit")]
    OutOfRange {
        topic: String,
        value: f64,
        unit: String,
        min: f64,
        max: f64,
    },
    #[error(
        "topic {topic} is measured in {expected}, not {got:?}; leave --unit out or pass {expected}"
    )]
    WrongUnit {
        topic: String,
        expected: &'static str,
        got: String,
    },
    #[error("{field} must be 1 to {max} printable characters, got {got:?}")]
    BadName {
        field: &'static str,
        max: usize,
        got: String,
    },
    #[error("aqi is only carried by air-quality readings and is at most 500, got {0}")]
    BadAqi(u16),
    #[error("block is {0} bytes, larger than the 1 MiB limit")]
    TooLarge(usize),
    #[error("not a DAG-CBOR reading: {0}")]
    Decode(String),
    #[error(
        "joins must name 1 to {MAX_JOINS} distinct heads besides prev, and only beside a prev"
    )]
    BadJoins,
}

/// What sensornet knows about one of the standard sensor topics: the sensors crate's table,
/// the one place topic names, aliases, units and ranges are defined.
pub use sensornet_sensors::topic::{Topic as KnownTopic, TOPICS as KNOWN_TOPICS};

/// Maps aliases (`temp`, `rh`, `pm25`, ...) to the canonical topic name; other names pass through.
pub fn canonical_topic(name: &str) -> &str {
    sensornet_sensors::topic::canonical_topic(name)
}

/// The known topic of that name (after aliasing), if any.
pub fn known_topic(name: &str) -> Option<&'static KnownTopic> {
    sensornet_sensors::topic::lookup(name)
}

/// One sensor reading. Field order is DAG-CBOR's canonical key order (length, then bytes),
/// so the serialized map is canonical and equal readings get equal CIDs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reading {
    /// US EPA AQI for air-quality readings (value is PM2.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aqi: Option<u16>,
    /// Height in the source's history: 1 for a first reading, else one above the highest
    /// parent. Concurrent readings of one source may share it (siblings).
    pub seq: u64,
    /// The parent this reading follows (the highest head its publisher knew); `None` for the
    /// first one. `dag/get CID/prev` walks it.
    pub prev: Option<Cid>,
    /// Measurement time, unix milliseconds.
    pub time: u64,
    /// Unit of `value`.
    pub unit: String,
    /// Other heads of the source the publisher knew (written concurrently elsewhere): this
    /// reading joins them, so the source's history is a Merkle clock, not a chain that forks.
    /// Absent when empty, so a single writer's readings keep their bytes and CIDs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joins: Vec<Cid>,
    /// Canonical topic name.
    pub topic: String,
    /// The measured value.
    pub value: f64,
    /// Sensor id, unique in the cluster.
    pub source: String,
}

fn check_name(field: &'static str, max: usize, s: &str) -> Result<(), ReadingError> {
    let ok = !s.is_empty() && s.len() <= max && s.chars().all(|c| !c.is_control());
    if ok {
        Ok(())
    } else {
        Err(ReadingError::BadName {
            field,
            max,
            got: s.chars().take(40).collect(),
        })
    }
}

impl Reading {
    /// Checks names, value, unit and range; the same rules apply to local and remote readings.
    pub fn validate(&self) -> Result<(), ReadingError> {
        check_name("topic", MAX_NAME_LEN, &self.topic)?;
        check_name("source", MAX_NAME_LEN, &self.source)?;
        if self.unit.len() > MAX_UNIT_LEN || self.unit.chars().any(char::is_control) {
            return Err(ReadingError::BadName {
                field: "unit",
                max: MAX_UNIT_LEN,
                got: self.unit.chars().take(40).collect(),
            });
        }
        if !self.value.is_finite() {
            return Err(ReadingError::NotFinite(self.value));
        }
        let known = KNOWN_TOPICS.iter().find(|t| t.name == self.topic);
        if let Some(t) = known {
            if self.unit != t.unit {
                return Err(ReadingError::WrongUnit {
                    topic: self.topic.clone(),
                    expected: t.unit,
                    got: self.unit.clone(),
                });
            }
            if self.value < t.min || self.value > t.max {
                return Err(ReadingError::OutOfRange {
                    topic: self.topic.clone(),
                    value: self.value,
                    unit: self.unit.clone(),
                    min: t.min,
                    max: t.max,
                });
            }
        }
        if let Some(aqi) = self.aqi {
            if self.topic != "air-quality" || aqi > 500 {
                return Err(ReadingError::BadAqi(aqi));
            }
        }
        if !self.joins.is_empty() {
            let mut seen: Vec<&Cid> = self.joins.iter().collect();
            seen.sort();
            seen.dedup();
            if self.prev.is_none()
                || self.joins.len() > MAX_JOINS
                || seen.len() != self.joins.len()
                || self.prev.is_some_and(|p| self.joins.contains(&p))
            {
                return Err(ReadingError::BadJoins);
            }
        }
        Ok(())
    }

    /// Every parent: `prev`, then the joined heads.
    pub fn parents(&self) -> impl Iterator<Item = &Cid> {
        self.prev.iter().chain(self.joins.iter())
    }

    /// Encodes as a DAG-CBOR block and returns it with its CID.
    pub fn encode(&self) -> (Cid, Vec<u8>) {
        // Serializing a plain struct of strings, numbers and a CID cannot fail.
        let bytes = serde_ipld_dagcbor::to_vec(self).expect("a Reading always serializes");
        (cid_of(DAG_CBOR, &bytes), bytes)
    }

    /// Decodes and validates a DAG-CBOR block.
    pub fn decode(bytes: &[u8]) -> Result<Reading, ReadingError> {
        if bytes.len() > MAX_BLOCK_SIZE {
            return Err(ReadingError::TooLarge(bytes.len()));
        }
        let r: Reading = serde_ipld_dagcbor::from_slice(bytes)
            .map_err(|e| ReadingError::Decode(e.to_string()))?;
        r.validate()?;
        Ok(r)
    }
}

/// Whether the bytes look like a reading at all (a CBOR map with reading keys), as opposed to
/// an opaque pubsub payload. A payload that looks like one but fails validation is hostile.
pub fn looks_like_reading(bytes: &[u8]) -> bool {
    // CBOR major type 5 (map) with 7 to 9 entries, then the first key "aqi" or "seq".
    matches!(bytes.first(), Some(0xa7..=0xa9))
        && (bytes.get(1..5) == Some(b"caqi") || bytes.get(1..5) == Some(b"cseq"))
}

/// CIDv1 with sha2-256 of `bytes` under `codec`.
pub fn cid_of(codec: u64, bytes: &[u8]) -> Cid {
    let digest = Sha256::digest(bytes);
    let mh = Multihash::<64>::wrap(SHA2_256, &digest).expect("32-byte digest fits");
    Cid::new_v1(codec, mh)
}

/// Whether `bytes` hash to `cid` (sha2-256 only: the one hash sensornet produces and accepts).
pub fn verify_cid(cid: &Cid, bytes: &[u8]) -> bool {
    cid.hash().code() == SHA2_256 && cid_of(cid.codec(), bytes) == *cid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64, prev: Option<Cid>) -> Reading {
        Reading {
            joins: Vec::new(),
            aqi: None,
            seq,
            prev,
            time: 1_700_000_000_000 + seq,
            unit: "°C".into(),
            topic: "temperature".into(),
            value: 21.5,
            source: "s1".into(),
        }
    }

    #[test]
    fn round_trip_and_cid_determinism() {
        let first = sample(1, None);
        let (cid1, bytes1) = first.encode();
        let second = sample(2, Some(cid1));
        let (cid2, bytes2) = second.encode();
        assert_eq!(Reading::decode(&bytes1).unwrap(), first);
        assert_eq!(Reading::decode(&bytes2).unwrap(), second);
        assert_eq!(second.encode().0, cid2, "same reading, same CID");
        assert_ne!(cid1, cid2);
        assert_eq!(cid1.codec(), DAG_CBOR);
        assert_eq!(cid1.version(), cid::Version::V1);
        assert!(verify_cid(&cid2, &bytes2));
        assert!(!verify_cid(&cid1, &bytes2));
        assert!(cid1.to_string().starts_with("bafyrei"), "{cid1}");
        assert!(looks_like_reading(&bytes1));
        assert!(!looks_like_reading(b"25"));
    }

    #[test]
    fn encoding_is_canonical_dag_cbor() {
        // Re-encoding through the generic IPLD model sorts keys as DAG-CBOR requires;
        // equal bytes prove our field order is canonical.
        let mut r = sample(3, Some(sample(2, None).encode().0));
        r.topic = "air-quality".into();
        r.unit = "µg/m³".into();
        r.aqi = Some(42);
        let (_, bytes) = r.encode();
        let generic: ipld_core::ipld::Ipld = serde_ipld_dagcbor::from_slice(&bytes).unwrap();
        assert_eq!(serde_ipld_dagcbor::to_vec(&generic).unwrap(), bytes);
        assert!(looks_like_reading(&bytes));
        // With joined heads too (nine keys).
        r.joins = vec![sample(2, Some(r.prev.unwrap())).encode().0];
        let (_, bytes) = r.encode();
        let generic: ipld_core::ipld::Ipld = serde_ipld_dagcbor::from_slice(&bytes).unwrap();
        assert_eq!(serde_ipld_dagcbor::to_vec(&generic).unwrap(), bytes);
        assert!(looks_like_reading(&bytes));
        assert_eq!(Reading::decode(&bytes).unwrap(), r);
    }

    #[test]
    fn joins_are_distinct_heads_beside_prev_and_absent_when_empty() {
        let a = sample(1, None).encode().0;
        let b = sample(2, None).encode().0;
        let mut r = sample(2, Some(a));
        let single = r.encode().1;
        assert!(
            !single.windows(5).any(|w| w == b"joins"),
            "no joins key when empty"
        );
        r.joins = vec![b];
        assert!(r.validate().is_ok());
        assert_eq!(r.parents().collect::<Vec<_>>(), vec![&a, &b]);
        r.joins = vec![a];
        assert!(
            matches!(r.validate(), Err(ReadingError::BadJoins)),
            "prev twice"
        );
        r.joins = vec![b, b];
        assert!(
            matches!(r.validate(), Err(ReadingError::BadJoins)),
            "duplicate"
        );
        r.prev = None;
        r.joins = vec![b];
        assert!(
            matches!(r.validate(), Err(ReadingError::BadJoins)),
            "joins without prev"
        );
    }

    #[test]
    fn refuses_bad_values() {
        let mut r = sample(1, None);
        r.value = f64::NAN;
        assert!(matches!(r.validate(), Err(ReadingError::NotFinite(_))));
        r.value = f64::INFINITY;
        assert!(matches!(r.validate(), Err(ReadingError::NotFinite(_))));
        r.value = 500.0;
        let err = r.validate().unwrap_err();
        assert!(
            err.to_string().contains("outside the plausible range"),
            "{err}"
        );
        r.value = 20.0;
        r.unit = "F".into();
        assert!(matches!(r.validate(), Err(ReadingError::WrongUnit { .. })));
        r.unit = "°C".into();
        r.source = String::new();
        assert!(matches!(r.validate(), Err(ReadingError::BadName { .. })));
        r.source = "s".into();
        r.aqi = Some(10);
        assert!(matches!(r.validate(), Err(ReadingError::BadAqi(10))));
        let mut h = sample(1, None);
        h.topic = "humidity".into();
        h.unit = "%RH".into();
        h.value = 101.0;
        assert!(h.validate().is_err());
        let mut other = sample(1, None);
        other.topic = "pressure".into();
        other.unit = "hPa".into();
        other.value = 1013.0;
        assert!(other.validate().is_ok(), "other topics are free-form");
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(Reading::decode(b"not cbor").is_err());
        assert!(Reading::decode(&[0xa1, 0x61, 0x61, 0x01]).is_err());
        let big = vec![0u8; MAX_BLOCK_SIZE + 1];
        assert_eq!(
            Reading::decode(&big),
            Err(ReadingError::TooLarge(MAX_BLOCK_SIZE + 1))
        );
        let mut r = sample(1, None);
        r.value = 1e9;
        let bytes = serde_ipld_dagcbor::to_vec(&r).unwrap();
        assert!(matches!(
            Reading::decode(&bytes),
            Err(ReadingError::OutOfRange { .. })
        ));
    }

    #[test]
    fn aliases() {
        assert_eq!(canonical_topic("temp"), "temperature");
        assert_eq!(known_topic("temp").unwrap().unit, "°C");
        assert!(known_topic("pressure").is_none());
    }

    #[test]
    fn topic_table_agrees_with_sensor_kinds() {
        use sensornet_sensors::SensorKind;
        for t in &KNOWN_TOPICS {
            for name in std::iter::once(&t.name).chain(t.aliases) {
                assert_eq!(canonical_topic(name), t.name, "{name}");
                assert_eq!(known_topic(name), Some(t), "{name}");
                let kind: SensorKind = name.parse().unwrap();
                assert_eq!(kind.topic(), canonical_topic(name), "{name}");
                assert_eq!(kind.unit(), t.unit);
                assert_eq!(kind.range(), (t.min, t.max));
            }
            // The bounds are accepted, just past them is not.
            let mut r = sample(1, None);
            r.topic = t.name.into();
            r.unit = t.unit.into();
            for (v, ok) in [(t.min, true), (t.max, true), (t.max + 1.0, false)] {
                r.value = v;
                assert_eq!(r.validate().is_ok(), ok, "{} {v}", t.name);
            }
        }
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
        }
        assert_eq!(canonical_topic("pressure"), "pressure");
        assert!("pressure".parse::<SensorKind>().is_err());
    }
}
