//! What a gossip message is: a reading for its topic, a bundle of readings for its topic, an
//! opaque payload on a non-sensor topic, or something to reject (and hold against the peer that sent it). A pure function:
//! no store, no network, no clock.

use crate::bundle::{self, looks_like_bundle};
use crate::reading::{canonical_topic, known_topic, looks_like_reading, Reading, ReadingError};

/// The verdict on one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A well-formed reading of the message's topic.
    Reading(Box<Reading>),
    /// Well-formed readings of the message's topic, each with its block bytes, in order.
    Bundle(Vec<(Reading, Vec<u8>)>),
    /// An opaque payload on a topic that does not carry readings.
    Raw,
    /// Refused, with the `reason` label of `sensornet_readings_rejected_total`.
    Reject(&'static str),
}

/// Judges a message on `topic` with payload `data`; `replayed` says the publisher's seqno
/// was seen before (see [`super::replay`]).
pub fn validate(topic: &str, data: &[u8], replayed: bool) -> Verdict {
    let topic = canonical_topic(topic);
    if replayed {
        return Verdict::Reject("replayed-seqno");
    }
    if looks_like_reading(data) {
        return match judge(topic, data) {
            Ok(r) => Verdict::Reading(Box::new(r)),
            Err(reason) => Verdict::Reject(reason),
        };
    }
    if looks_like_bundle(data) {
        let Ok(blocks) = bundle::decode(data) else {
            return Verdict::Reject("bad-bundle");
        };
        let mut readings = Vec::with_capacity(blocks.len());
        // One bad reading condemns the message: its publisher signed all of them.
        for block in blocks {
            if !looks_like_reading(&block) {
                return Verdict::Reject("bad-bundle");
            }
            match judge(topic, &block) {
                Ok(r) => readings.push((r, block)),
                Err(reason) => return Verdict::Reject(reason),
            }
        }
        return Verdict::Bundle(readings);
    }
    if known_topic(topic).is_some() {
        Verdict::Reject("not-a-reading")
    } else {
        Verdict::Raw
    }
}

/// A reading block of `topic`, or the reason it is refused.
fn judge(topic: &str, block: &[u8]) -> Result<Reading, &'static str> {
    match Reading::decode(block) {
        Ok(r) if r.topic == topic => Ok(r),
        Ok(_) => Err("wrong-topic"),
        Err(ReadingError::Decode(_)) => Err("not-cbor"),
        Err(_) => Err("bad-reading"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(topic: &str, value: f64) -> Reading {
        let unit = known_topic(topic).map(|t| t.unit.to_string()).unwrap();
        Reading {
            joins: Vec::new(),
            aqi: None,
            seq: 1,
            prev: None,
            time: 1_764_000_000_000,
            unit,
            topic: topic.into(),
            value,
            source: "s1".into(),
        }
    }

    #[test]
    fn a_reading_of_its_topic_is_accepted_under_the_alias_too() {
        let r = reading("temperature", 21.5);
        let (_, bytes) = r.encode();
        assert_eq!(
            validate("temperature", &bytes, false),
            Verdict::Reading(Box::new(r.clone()))
        );
        assert_eq!(
            validate("temp", &bytes, false),
            Verdict::Reading(Box::new(r))
        );
    }

    #[test]
    fn each_bad_kind_gets_its_own_reason() {
        let (_, temp) = reading("temperature", 21.5).encode();
        assert_eq!(
            validate("humidity", &temp, false),
            Verdict::Reject("wrong-topic")
        );
        assert_eq!(
            validate("temperature", &temp, true),
            Verdict::Reject("replayed-seqno")
        );
        assert_eq!(
            validate("temperature", b"25", false),
            Verdict::Reject("not-a-reading")
        );
        // Looks like a reading map but is cut short.
        assert_eq!(
            validate("temperature", &temp[..12], false),
            Verdict::Reject("not-cbor")
        );
        let mut hot = reading("temperature", 21.5);
        hot.value = 1e9;
        let bytes = serde_ipld_dagcbor::to_vec(&hot).unwrap();
        assert_eq!(
            validate("temperature", &bytes, false),
            Verdict::Reject("bad-reading")
        );
    }

    #[test]
    fn a_bundle_is_its_readings_or_rejected_whole() {
        let a = reading("temperature", 21.5);
        let mut b = reading("temperature", 22.5);
        b.seq = 2;
        let blocks = vec![a.encode().1, b.encode().1];
        assert_eq!(
            validate("temp", &bundle::encode(&blocks), false),
            Verdict::Bundle(vec![(a.clone(), blocks[0].clone()), (b, blocks[1].clone())])
        );
        let (_, humid) = reading("humidity", 40.0).encode();
        let mixed = bundle::encode(&[blocks[0].clone(), humid]);
        assert_eq!(
            validate("temperature", &mixed, false),
            Verdict::Reject("wrong-topic")
        );
        let opaque = bundle::encode(&[blocks[0].clone(), b"25".to_vec()]);
        assert_eq!(
            validate("temperature", &opaque, false),
            Verdict::Reject("bad-bundle")
        );
        let mut hot = reading("temperature", 21.5);
        hot.value = 1e9;
        let hot = bundle::encode(&[serde_ipld_dagcbor::to_vec(&hot).unwrap()]);
        assert_eq!(
            validate("temperature", &hot, false),
            Verdict::Reject("bad-reading")
        );
        let none: Vec<Vec<u8>> = Vec::new();
        assert_eq!(
            validate("temperature", &bundle::encode(&none), false),
            Verdict::Reject("bad-bundle")
        );
        assert_eq!(
            validate("temperature", &bundle::encode(&blocks), true),
            Verdict::Reject("replayed-seqno")
        );
    }

    #[test]
    fn other_topics_carry_anything() {
        assert_eq!(validate("chat", b"hello", false), Verdict::Raw);
        assert_eq!(validate("chat", b"", false), Verdict::Raw);
        assert_eq!(
            validate("chat", b"x", true),
            Verdict::Reject("replayed-seqno")
        );
    }
}
