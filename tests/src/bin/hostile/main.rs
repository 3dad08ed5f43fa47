//! A hostile rust-libp2p peer for the tests: dials a node and misbehaves in one of four ways.
//!   hostile-peer MULTIADDR payloads:KIND   signed gossip of one bad kind: not-cbor, bad-reading,
//!                                     bad-bundle, wrong-topic, oversized, truncated, topic-flood
//!   hostile-peer MULTIADDR unsigned   valid readings (source `unsigned`) without signatures
//!   hostile-peer MULTIADDR badblocks  answers the node's sync requests with blocks that do not
//!                                     hash to their CID
//!   hostile-peer MULTIADDR replay     signed gossip with fresh, then long-used seqnos (replay.rs)
//! Prints `peer <id>` first, then one line per action; runs for the given seconds (default 8).

use std::time::Duration;

use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, request_response, tcp, yamux, Multiaddr, StreamProtocol};
use sensornet::p2p::protocol::{ChainEnd, SyncRequest, SyncResponse, WireHead, PROTOCOL};
use sensornet::reading::Reading;
use serde_bytes::ByteBuf;

mod replay;

#[derive(NetworkBehaviour)]
struct Hostile {
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
    sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
}

fn reading(topic: &str, value: f64, unit: &str) -> Vec<u8> {
    // Built by hand so out-of-range values get past our own validation.
    let r = Reading {
        joins: Vec::new(),
        aqi: None,
        seq: 1,
        prev: None,
        time: 1,
        unit: unit.into(),
        topic: topic.into(),
        value,
        source: "evil".into(),
    };
    r.encode().1
}

/// A reading our validator would accept (current time, in range), from `source`.
fn valid_reading(source: &str, round: u64) -> Vec<u8> {
    Reading {
        joins: Vec::new(),
        aqi: None,
        seq: round,
        prev: None,
        time: sensornet::clock::now_ms(),
        unit: "°C".into(),
        topic: "temperature".into(),
        value: 20.0 + (round % 10) as f64 / 10.0,
        source: source.into(),
    }
    .encode()
    .1
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let target: Multiaddr = args
        .get(1)
        .expect("usage: hostile-peer MULTIADDR MODE [SECONDS]")
        .parse()?;
    let mode = args.get(2).cloned().unwrap_or_else(|| "payloads".into());
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(8);
    if mode == "replay" {
        return replay::run(target, secs).await;
    }
    let unsigned = mode == "unsigned";
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            let config = gossipsub::ConfigBuilder::default()
                .max_transmit_size(4 << 20)
                .validation_mode(if unsigned {
                    ValidationMode::None
                } else {
                    ValidationMode::Strict
                })
                .heartbeat_interval(Duration::from_millis(500))
                // Unsigned messages have no seqno: identify them by content.
                .message_id_fn(|m| {
                    use std::hash::{Hash, Hasher};
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    m.data.hash(&mut h);
                    gossipsub::MessageId::from(h.finish().to_be_bytes().to_vec())
                })
                .build()
                .expect("gossipsub config");
            let auth = if unsigned {
                MessageAuthenticity::Anonymous
            } else {
                MessageAuthenticity::Signed(key.clone())
            };
            Hostile {
                gossipsub: gossipsub::Behaviour::new(auth, config).expect("gossipsub"),
                identify: identify::Behaviour::new(identify::Config::new(
                    "ipfs/0.1.0".into(),
                    key.public(),
                )),
                sync: request_response::cbor::Behaviour::new(
                    [(
                        StreamProtocol::new(PROTOCOL),
                        request_response::ProtocolSupport::Full,
                    )],
                    request_response::Config::default(),
                ),
            }
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    println!("peer {}", swarm.local_peer_id());
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    swarm.dial(target)?;
    for t in ["temperature", "humidity", "air-quality", "chatter"] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&IdentTopic::new(t))?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut round: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tick.tick() => {
                round += 1;
                if mode == "badblocks" || round < 10 {
                    continue; // let the mesh form first
                }
                let g = &mut swarm.behaviour_mut().gossipsub;
                let kind = mode.strip_prefix("payloads:").unwrap_or(if unsigned { "valid" } else { "" });
                let (topic, data) = match kind {
                    "not-cbor" => ("temperature", format!("garbage {round}").into_bytes()),
                    "valid" => ("temperature", valid_reading("unsigned", round)),
                    "bad-reading" => ("temperature", reading("temperature", 900.0 + round as f64, "°C")),
                    // A signed bundle of a well-formed reading and an opaque payload: refused
                    // whole, the good reading with it.
                    "bad-bundle" => ("temperature", sensornet::bundle::encode(&[valid_reading("evil", round), b"25".to_vec()])),
                    "wrong-topic" => ("humidity", reading("temperature", round as f64 / 10.0, "°C")),
                    "oversized" => ("temperature", vec![round as u8; 2 << 20]),
                    "truncated" => ("air-quality", [&[0xa7, 0x63, 0x73, 0x65, 0x71, 0xff][..], &round.to_be_bytes()].concat()),
                    "topic-flood" => {
                        // The node caps the topics it tracks per peer.
                        for i in 0..300 {
                            let _ = g.subscribe(&IdentTopic::new(format!("flood-{round}-{i}")));
                        }
                        println!("topic-flood: sent flood-{round}-0..299");
                        continue;
                    }
                    other => panic!("unknown mode {other}"),
                };
                match g.publish(IdentTopic::new(topic), data) {
                    Ok(_) => println!("{kind}: sent"),
                    Err(e) => println!("{kind}: not sent ({e})"),
                }
            }
            ev = swarm.select_next_some() => {
                if let SwarmEvent::Behaviour(HostileEvent::Sync(request_response::Event::Message {
                    message: request_response::Message::Request { request, channel, .. }, ..
                })) = ev {
                    let fake = sensornet::reading::cid_of(0x71, b"a block that exists nowhere");
                    let resp = match request {
                        SyncRequest::Heads { .. } if mode == "badblocks" => {
                            println!("heads: lying");
                            SyncResponse::Heads(vec![WireHead { topic: "temperature".into(), source: "evil".into(), seq: 50, cid: ByteBuf::from(fake.to_bytes()) }])
                        }
                        SyncRequest::Heads { .. } => SyncResponse::Heads(vec![]),
                        SyncRequest::Chain { .. } if mode != "badblocks" => SyncResponse::Chain { blocks: vec![], end: ChainEnd::Missing },
                        SyncRequest::Chain { .. } => {
                            println!("chain: sending blocks that do not hash to the CID");
                            SyncResponse::Chain { blocks: vec![ByteBuf::from(reading("temperature", 20.0, "°C"))], end: ChainEnd::Done }
                        }
                        SyncRequest::History { .. } => SyncResponse::History { blocks: vec![], next: None },
                    };
                    let _ = swarm.behaviour_mut().sync.send_response(channel, resp);
                }
            }
        }
    }
    Ok(())
}
