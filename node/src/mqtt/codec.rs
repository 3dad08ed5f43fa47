//! MQTT packets without the version: decodes 3.1.1 and 5.0 packets with rumqttc's `mqttbytes`
//! codecs (v4 and v5) into one enum, and encodes this listener's answers in the client's
//! version, so the rest of the listener never looks at a protocol level.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{self as b4, v4};
use rumqttc::v5::mqttbytes::{self as b5, v5};

/// Protocol version of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

/// A will message from CONNECT.
#[derive(Clone, Debug)]
pub struct Will {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS asked for.
    pub qos: u8,
}

/// A CONNECT packet.
#[derive(Clone, Debug)]
pub struct Connect {
    /// Version the client speaks.
    pub version: Version,
    /// Client identifier (may be empty).
    pub client_id: String,
    /// Clean session (3.1.1) / clean start (5.0).
    pub clean_start: bool,
    /// Keepalive in seconds (0: none).
    pub keep_alive: u16,
    /// MQTT 5 session expiry interval in seconds.
    pub session_expiry: Option<u32>,
    /// Will message.
    pub will: Option<Will>,
    /// Password, if given.
    pub password: Option<String>,
}

/// A packet from a client.
#[derive(Clone, Debug)]
pub enum Incoming {
    /// CONNECT.
    Connect(Connect),
    /// PUBLISH.
    Publish {
        /// Topic name (empty when a 5.0 topic alias stands for it).
        topic: String,
        /// QoS.
        qos: u8,
        /// Packet id (QoS > 0).
        pkid: u16,
        /// Payload.
        payload: Bytes,
    },
    /// PUBACK of a message we sent.
    PubAck(u16),
    /// SUBSCRIBE: (filter, QoS) pairs.
    Subscribe {
        /// Packet id.
        pkid: u16,
        /// Filters and their QoS.
        filters: Vec<(String, u8)>,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Packet id.
        pkid: u16,
        /// Filters.
        filters: Vec<String>,
    },
    /// PINGREQ.
    PingReq,
    /// DISCONNECT.
    Disconnect {
        /// 5.0 reason 0x04: publish the will anyway.
        with_will: bool,
        /// 5.0 session expiry set at disconnect.
        session_expiry: Option<u32>,
    },
    /// A packet a client may send that this listener does not act on (QoS 2 flow, AUTH).
    Unsupported(&'static str),
}

/// Why a connection is refused at CONNACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnCode {
    /// Accepted.
    Accepted,
    /// Unsupported protocol level.
    BadVersion,
    /// Client id refused.
    BadClientId,
    /// Wrong or missing password.
    BadCredentials,
    /// Too many connections.
    Busy,
    /// The CONNECT could not be parsed.
    Malformed,
}

/// Outcome of a QoS 1 PUBLISH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckCode {
    /// Durable on this node.
    Success,
    /// The payload is not a valid reading (5.0: 0x99).
    Invalid(String),
    /// The node cannot take it now (not ready, store failing; 5.0: 0x83).
    Unavailable(String),
}

/// One SUBACK entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubCode {
    /// Granted at this QoS.
    Granted(u8),
    /// Beyond the per-client subscription limit.
    Quota,
    /// A filter this listener cannot serve.
    Invalid,
}

/// Why the server closes a connection (sent as a 5.0 DISCONNECT; 3.1.1 just closes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// 0x81.
    Malformed,
    /// 0x82.
    ProtocolError,
    /// 0x95.
    TooLarge,
    /// 0x8D.
    KeepAlive,
    /// 0x8E.
    TakenOver,
    /// 0x8B.
    ShuttingDown,
    /// 0x9B.
    QosNotSupported,
    /// 0x94.
    TopicAliasInvalid,
    /// 0x99.
    PayloadInvalid,
    /// 0x83.
    Unavailable,
}

/// A packet to a client.
#[derive(Clone, Debug)]
pub enum Outgoing {
    /// CONNACK.
    ConnAck {
        /// A stored session was resumed.
        session_present: bool,
        /// Result.
        code: ConnCode,
        /// 5.0: the id given to a client that sent none.
        assigned_id: Option<String>,
        /// 5.0: the largest packet accepted.
        max_packet: u32,
    },
    /// PUBLISH.
    Publish {
        /// Topic.
        topic: String,
        /// QoS.
        qos: u8,
        /// Packet id (QoS 1).
        pkid: u16,
        /// Retained (the latest reading, sent on subscribe).
        retain: bool,
        /// Payload.
        payload: Bytes,
    },
    /// PUBACK.
    PubAck {
        /// Packet id.
        pkid: u16,
        /// Outcome.
        code: AckCode,
    },
    /// SUBACK.
    SubAck {
        /// Packet id.
        pkid: u16,
        /// One entry per filter.
        codes: Vec<SubCode>,
    },
    /// UNSUBACK.
    UnsubAck {
        /// Packet id.
        pkid: u16,
        /// Filters in the UNSUBSCRIBE.
        count: usize,
    },
    /// PINGRESP.
    PingResp,
    /// DISCONNECT (5.0 only).
    Disconnect(CloseCode),
}

/// Decoding failures.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("packet of {size} bytes is larger than the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("the first packet must be CONNECT")]
    NotConnect,
    #[error("unsupported MQTT protocol level {0} (3.1.1 and 5.0 are served)")]
    BadVersion(u8),
    #[error("cannot encode: {0}")]
    Encode(String),
}

fn qos_u8(q: b4::QoS) -> u8 {
    q as u8
}

fn qos5_u8(q: b5::QoS) -> u8 {
    q as u8
}

fn qos4(q: u8) -> b4::QoS {
    if q == 0 {
        b4::QoS::AtMostOnce
    } else {
        b4::QoS::AtLeastOnce
    }
}

fn qos5(q: u8) -> b5::QoS {
    if q == 0 {
        b5::QoS::AtMostOnce
    } else {
        b5::QoS::AtLeastOnce
    }
}

/// The protocol level of a complete CONNECT frame at the start of `buf`, or `None` while the
/// frame is incomplete. The level decides which codec parses the rest.
fn connect_level(buf: &BytesMut, max: usize) -> Result<Option<u8>, CodecError> {
    // CONNECT's first byte is exactly 0x10: anything else is refused before more is read.
    if buf.first().is_some_and(|b| *b != 0x10) {
        return Err(CodecError::NotConnect);
    }
    match b4::check(buf.iter(), max) {
        Ok(_) => {}
        Err(b4::Error::InsufficientBytes(_)) => return Ok(None),
        Err(e) => return Err(map4(e, max)),
    }
    // Fixed header: type byte, 1 to 4 remaining-length bytes; then "\0\x04MQTT" and the level.
    let mut i = 1;
    while buf[i] & 0x80 != 0 {
        i += 1;
    }
    let level_at = i + 1 + 6;
    match (buf.get(i + 1..level_at), buf.get(level_at)) {
        (Some(b"\0\x04MQTT"), Some(level)) => Ok(Some(*level)),
        (Some(name), Some(level)) if name.ends_with(b"MQIsdp") || name.len() == 6 => {
            Err(CodecError::BadVersion(*level))
        }
        _ => Err(CodecError::Malformed(
            "CONNECT without a protocol name".into(),
        )),
    }
}

fn map4(e: b4::Error, max: usize) -> CodecError {
    match e {
        b4::Error::PayloadSizeLimitExceeded(size) => CodecError::TooLarge { size, max },
        other => CodecError::Malformed(other.to_string()),
    }
}

fn map5(e: b5::Error, max: usize) -> CodecError {
    match e {
        b5::Error::PayloadSizeLimitExceeded { pkt_size, .. } => CodecError::TooLarge {
            size: pkt_size,
            max,
        },
        other => CodecError::Malformed(other.to_string()),
    }
}

/// Takes the next complete packet off `buf`; `None` until one is complete. `version` is
/// `None` before CONNECT: then only a CONNECT is accepted, and its level picks the codec.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<Version>,
    max: usize,
) -> Result<Option<Incoming>, CodecError> {
    let version = match version {
        Some(v) => v,
        None => match connect_level(buf, max)? {
            None => return Ok(None),
            Some(4) => Version::V4,
            Some(5) => Version::V5,
            Some(l) => return Err(CodecError::BadVersion(l)),
        },
    };
    match version {
        Version::V4 => decode4(buf, max),
        Version::V5 => decode5(buf, max),
    }
}

fn decode4(buf: &mut BytesMut, max: usize) -> Result<Option<Incoming>, CodecError> {
    let packet = match v4::Packet::read(buf, max) {
        Ok(p) => p,
        Err(b4::Error::InsufficientBytes(_)) => return Ok(None),
        Err(e) => return Err(map4(e, max)),
    };
    Ok(Some(match packet {
        v4::Packet::Connect(c) => Incoming::Connect(Connect {
            version: Version::V4,
            client_id: c.client_id,
            clean_start: c.clean_session,
            keep_alive: c.keep_alive,
            session_expiry: None,
            will: c.last_will.map(|w| Will {
                topic: w.topic,
                payload: w.message,
                qos: qos_u8(w.qos),
            }),
            password: c.login.map(|l| l.password),
        }),
        v4::Packet::Publish(p) => Incoming::Publish {
            topic: p.topic,
            qos: qos_u8(p.qos),
            pkid: p.pkid,
            payload: p.payload,
        },
        v4::Packet::PubAck(a) => Incoming::PubAck(a.pkid),
        v4::Packet::Subscribe(s) => Incoming::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, qos_u8(f.qos)))
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => Incoming::PingReq,
        v4::Packet::Disconnect => Incoming::Disconnect {
            with_will: false,
            session_expiry: None,
        },
        v4::Packet::PubRec(_) | v4::Packet::PubRel(_) | v4::Packet::PubComp(_) => {
            Incoming::Unsupported("QoS 2")
        }
        v4::Packet::ConnAck(_)
        | v4::Packet::SubAck(_)
        | v4::Packet::UnsubAck(_)
        | v4::Packet::PingResp => Incoming::Unsupported("a server-to-client packet"),
    }))
}

fn decode5(buf: &mut BytesMut, max: usize) -> Result<Option<Incoming>, CodecError> {
    // A 5.0 DISCONNECT may omit its reason code (remaining length 0: normal disconnection),
    // which the v5 codec refuses as "payload required".
    if buf.len() >= 2 && buf[0] == 0xE0 && buf[1] == 0 {
        let _ = buf.split_to(2);
        return Ok(Some(Incoming::Disconnect {
            with_will: false,
            session_expiry: None,
        }));
    }
    let packet = match v5::Packet::read(buf, Some(max as u32)) {
        Ok(p) => p,
        Err(b5::Error::InsufficientBytes(_)) => return Ok(None),
        Err(e) => return Err(map5(e, max)),
    };
    Ok(Some(match packet {
        v5::Packet::Connect(c, will, login) => Incoming::Connect(Connect {
            version: Version::V5,
            client_id: c.client_id,
            clean_start: c.clean_start,
            keep_alive: c.keep_alive,
            session_expiry: c.properties.and_then(|p| p.session_expiry_interval),
            will: will.map(|w| Will {
                topic: String::from_utf8_lossy(&w.topic).into_owned(),
                payload: w.message,
                qos: qos5_u8(w.qos),
            }),
            password: login.map(|l| l.password),
        }),
        v5::Packet::Publish(p) => {
            if p.properties
                .as_ref()
                .is_some_and(|p| p.topic_alias.is_some())
            {
                return Ok(Some(Incoming::Unsupported("topic alias")));
            }
            Incoming::Publish {
                topic: String::from_utf8(p.topic.to_vec())
                    .map_err(|_| CodecError::Malformed("topic is not UTF-8".into()))?,
                qos: qos5_u8(p.qos),
                pkid: p.pkid,
                payload: p.payload,
            }
        }
        v5::Packet::PubAck(a) => Incoming::PubAck(a.pkid),
        v5::Packet::Subscribe(s) => Incoming::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, qos5_u8(f.qos)))
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => Incoming::PingReq,
        v5::Packet::Disconnect(d) => Incoming::Disconnect {
            with_will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
            session_expiry: d.properties.and_then(|p| p.session_expiry_interval),
        },
        v5::Packet::PubRec(_) | v5::Packet::PubRel(_) | v5::Packet::PubComp(_) => {
            Incoming::Unsupported("QoS 2")
        }
        v5::Packet::Auth(_) => Incoming::Unsupported("AUTH"),
        v5::Packet::ConnAck(_)
        | v5::Packet::SubAck(_)
        | v5::Packet::UnsubAck(_)
        | v5::Packet::PingResp(_) => Incoming::Unsupported("a server-to-client packet"),
    }))
}

/// Appends `packet` to `out` in `version`'s encoding; a 3.1.1 DISCONNECT writes nothing.
pub fn encode(version: Version, packet: &Outgoing, out: &mut BytesMut) -> Result<(), CodecError> {
    let r = match version {
        Version::V4 => encode4(packet, out).map_err(|e| CodecError::Encode(e.to_string())),
        Version::V5 => encode5(packet, out).map_err(|e| CodecError::Encode(e.to_string())),
    };
    r.map(|_| ())
}

fn encode4(packet: &Outgoing, out: &mut BytesMut) -> Result<usize, b4::Error> {
    match packet {
        Outgoing::ConnAck {
            session_present,
            code,
            ..
        } => {
            let code = match code {
                ConnCode::Accepted => v4::ConnectReturnCode::Success,
                ConnCode::BadVersion => v4::ConnectReturnCode::RefusedProtocolVersion,
                ConnCode::BadClientId => v4::ConnectReturnCode::BadClientId,
                ConnCode::BadCredentials => v4::ConnectReturnCode::BadUserNamePassword,
                ConnCode::Busy | ConnCode::Malformed => v4::ConnectReturnCode::ServiceUnavailable,
            };
            v4::ConnAck::new(code, *session_present).write(out)
        }
        Outgoing::Publish {
            topic,
            qos,
            pkid,
            retain,
            payload,
        } => {
            let mut p = v4::Publish::from_bytes(topic.as_str(), qos4(*qos), payload.clone());
            p.pkid = *pkid;
            p.retain = *retain;
            p.write(out)
        }
        // 3.1.1 has no negative PUBACK: the caller closes the connection instead.
        Outgoing::PubAck { pkid, .. } => v4::PubAck::new(*pkid).write(out),
        Outgoing::SubAck { pkid, codes } => v4::SubAck::new(
            *pkid,
            codes
                .iter()
                .map(|c| match c {
                    SubCode::Granted(q) => v4::SubscribeReasonCode::Success(qos4(*q)),
                    SubCode::Quota | SubCode::Invalid => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        )
        .write(out),
        Outgoing::UnsubAck { pkid, .. } => v4::UnsubAck::new(*pkid).write(out),
        Outgoing::PingResp => v4::PingResp.write(out),
        Outgoing::Disconnect(_) => Ok(0),
    }
}

fn encode5(packet: &Outgoing, out: &mut BytesMut) -> Result<usize, b5::Error> {
    match packet {
        Outgoing::ConnAck {
            session_present,
            code,
            assigned_id,
            max_packet,
        } => {
            let code = match code {
                ConnCode::Accepted => v5::ConnectReturnCode::Success,
                ConnCode::BadVersion => v5::ConnectReturnCode::UnsupportedProtocolVersion,
                ConnCode::BadClientId => v5::ConnectReturnCode::ClientIdentifierNotValid,
                ConnCode::BadCredentials => v5::ConnectReturnCode::BadUserNamePassword,
                ConnCode::Busy => v5::ConnectReturnCode::ServerBusy,
                ConnCode::Malformed => v5::ConnectReturnCode::MalformedPacket,
            };
            let accepted = matches!(code, v5::ConnectReturnCode::Success);
            let properties = accepted.then(|| v5::ConnAckProperties {
                session_expiry_interval: None,
                receive_max: Some(super::MAX_PIPELINE as u16),
                max_qos: Some(1),
                retain_available: Some(1),
                max_packet_size: Some(*max_packet),
                assigned_client_identifier: assigned_id.clone(),
                topic_alias_max: None,
                reason_string: None,
                user_properties: Vec::new(),
                wildcard_subscription_available: Some(1),
                subscription_identifiers_available: Some(0),
                shared_subscription_available: Some(0),
                server_keep_alive: None,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            });
            v5::ConnAck {
                session_present: *session_present,
                code,
                properties,
            }
            .write(out)
        }
        Outgoing::Publish {
            topic,
            qos,
            pkid,
            retain,
            payload,
        } => {
            let mut p = v5::Publish::new(topic.as_str(), qos5(*qos), payload.clone(), None);
            p.pkid = *pkid;
            p.retain = *retain;
            p.write(out)
        }
        Outgoing::PubAck { pkid, code } => {
            let (reason, why) = match code {
                AckCode::Success => (v5::PubAckReason::Success, None),
                AckCode::Invalid(why) => (v5::PubAckReason::PayloadFormatInvalid, Some(why)),
                AckCode::Unavailable(why) => {
                    (v5::PubAckReason::ImplementationSpecificError, Some(why))
                }
            };
            v5::PubAck {
                pkid: *pkid,
                reason,
                properties: why.map(|w| v5::PubAckProperties {
                    reason_string: Some(w.chars().take(200).collect()),
                    user_properties: Vec::new(),
                }),
            }
            .write(out)
        }
        Outgoing::SubAck { pkid, codes } => v5::SubAck {
            pkid: *pkid,
            return_codes: codes
                .iter()
                .map(|c| match c {
                    SubCode::Granted(q) => v5::SubscribeReasonCode::Success(qos5(*q)),
                    SubCode::Quota => v5::SubscribeReasonCode::QuotaExceeded,
                    SubCode::Invalid => v5::SubscribeReasonCode::TopicFilterInvalid,
                })
                .collect(),
            properties: None,
        }
        .write(out),
        Outgoing::UnsubAck { pkid, count } => v5::UnsubAck {
            pkid: *pkid,
            reasons: vec![v5::UnsubAckReason::Success; *count],
            properties: None,
        }
        .write(out),
        Outgoing::PingResp => v5::PingResp::write(out),
        Outgoing::Disconnect(code) => v5::Disconnect::new(match code {
            CloseCode::Malformed => v5::DisconnectReasonCode::MalformedPacket,
            CloseCode::ProtocolError => v5::DisconnectReasonCode::ProtocolError,
            CloseCode::TooLarge => v5::DisconnectReasonCode::PacketTooLarge,
            CloseCode::KeepAlive => v5::DisconnectReasonCode::KeepAliveTimeout,
            CloseCode::TakenOver => v5::DisconnectReasonCode::SessionTakenOver,
            CloseCode::ShuttingDown => v5::DisconnectReasonCode::ServerShuttingDown,
            CloseCode::QosNotSupported => v5::DisconnectReasonCode::QoSNotSupported,
            CloseCode::TopicAliasInvalid => v5::DisconnectReasonCode::TopicAliasInvalid,
            CloseCode::PayloadInvalid => v5::DisconnectReasonCode::PayloadFormatInvalid,
            CloseCode::Unavailable => v5::DisconnectReasonCode::ImplementationSpecificError,
        })
        .write(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect4(clean: bool) -> BytesMut {
        let mut c = v4::Connect::new("c1");
        c.clean_session = clean;
        c.set_login("u", "secret");
        let mut b = BytesMut::new();
        c.write(&mut b).unwrap();
        b
    }

    #[test]
    fn decodes_both_versions_and_refuses_garbage() {
        let mut b = connect4(false);
        let Some(Incoming::Connect(c)) = decode(&mut b, None, 1 << 16).unwrap() else {
            panic!("connect");
        };
        assert_eq!(c.version, Version::V4);
        assert!(!c.clean_start);
        assert_eq!(c.password.as_deref(), Some("secret"));
        assert!(b.is_empty());

        let mut b = BytesMut::new();
        let c5 = v5::Connect {
            keep_alive: 10,
            client_id: "c5".into(),
            clean_start: false,
            properties: Some(v5::ConnectProperties {
                session_expiry_interval: Some(300),
                receive_maximum: None,
                max_packet_size: None,
                topic_alias_max: None,
                request_response_info: None,
                request_problem_info: None,
                user_properties: Vec::new(),
                authentication_method: None,
                authentication_data: None,
            }),
        };
        c5.write(&None, &None, &mut b).unwrap();
        let Some(Incoming::Connect(c)) = decode(&mut b, None, 1 << 16).unwrap() else {
            panic!("connect 5");
        };
        assert_eq!((c.version, c.session_expiry), (Version::V5, Some(300)));

        // Half a packet waits for more; garbage is refused.
        let mut half = connect4(true);
        let mut part = half.split_to(5);
        assert!(decode(&mut part, None, 1 << 16).unwrap().is_none());
        let mut junk = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        assert!(decode(&mut junk, None, 1 << 16).is_err());
        // A 5.0 DISCONNECT without a reason code.
        let mut d = BytesMut::from(&[0xE0u8, 0][..]);
        assert!(matches!(
            decode(&mut d, Some(Version::V5), 1 << 16).unwrap(),
            Some(Incoming::Disconnect { .. })
        ));
        // Too large is told apart from malformed.
        let mut p = BytesMut::new();
        v4::Publish::new("t", b4::QoS::AtMostOnce, vec![0u8; 2000])
            .write(&mut p)
            .unwrap();
        assert!(matches!(
            decode(&mut p, Some(Version::V4), 1000),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn encodes_answers_in_both_versions() {
        for v in [Version::V4, Version::V5] {
            let mut out = BytesMut::new();
            encode(
                v,
                &Outgoing::SubAck {
                    pkid: 3,
                    codes: vec![SubCode::Granted(1), SubCode::Quota],
                },
                &mut out,
            )
            .unwrap();
            assert_eq!(out[0], 0x90);
            let mut out = BytesMut::new();
            encode(
                v,
                &Outgoing::PubAck {
                    pkid: 9,
                    code: AckCode::Invalid("no".into()),
                },
                &mut out,
            )
            .unwrap();
            assert_eq!(out[0], 0x40);
        }
    }
}
