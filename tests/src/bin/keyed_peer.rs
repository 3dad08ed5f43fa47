//! A rust-libp2p gossipsub peer with an identity of a chosen key type, as go-libp2p peers carry:
//!   keyed-peer KEYTYPE MULTIADDR [SECONDS]
//! KEYTYPE is ed25519, rsa (2048 bits, made with the `openssl` CLI), secp256k1 or ecdsa (P-256).
//! TCP + Noise + Yamux; gossipsub /meshsub/1.1.0, signed, strict validation, message id
//! `from ‖ seqno` as go-libp2p-pubsub and sensornet compute it. It dials MULTIADDR, subscribes
//! to `temperature` and, once the target has subscribed too and the mesh had a heartbeat to form,
//! publishes one DAG-CBOR reading. Prints JSON lines:
//!   {"peer": ID, "key": KEYTYPE}
//!   {"published": CID, "source": S}
//!   {"received": CID, "from": ID, "source": S}     for every reading that arrives
//! and exits after SECONDS (default 30) or when stdin closes.

use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, tcp, yamux, Multiaddr};
use sensornet::p2p::behaviour::go_message_id;
use sensornet::reading::Reading;
use serde_json::json;

#[derive(NetworkBehaviour)]
struct Peer {
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
}

/// A 2048-bit RSA key: libp2p cannot generate one, so `openssl genpkey` does. Its DER output is
/// PKCS#1; `openssl pkcs8 -topk8` turns the PEM into the PKCS#8 DER libp2p reads.
fn rsa_keypair() -> anyhow::Result<Keypair> {
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
             | openssl pkcs8 -topk8 -nocrypt -outform DER",
        ])
        .output()
        .context("running openssl genpkey | openssl pkcs8")?;
    if !out.status.success() {
        bail!("openssl: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let mut der = out.stdout;
    Ok(Keypair::rsa_from_pkcs8(&mut der)?)
}

fn keypair(kind: &str) -> anyhow::Result<Keypair> {
    Ok(match kind {
        "ed25519" => Keypair::generate_ed25519(),
        "rsa" => rsa_keypair()?,
        "secp256k1" => Keypair::generate_secp256k1(),
        "ecdsa" => Keypair::generate_ecdsa(),
        other => bail!("unknown key type {other:?}: ed25519, rsa, secp256k1 or ecdsa"),
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn line(v: serde_json::Value) {
    println!("{v}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        bail!("usage: keyed-peer ed25519|rsa|secp256k1|ecdsa MULTIADDR [SECONDS]");
    }
    let kind = args[1].clone();
    let target: Multiaddr = args[2].parse()?;
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(30);
    let key = keypair(&kind)?;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            let config = gossipsub::ConfigBuilder::default()
                .protocol_id("/meshsub/1.1.0", gossipsub::Version::V1_1)
                .validation_mode(ValidationMode::Strict)
                .message_id_fn(go_message_id)
                .heartbeat_interval(Duration::from_millis(500))
                .max_transmit_size(1 << 20)
                .build()
                .expect("gossipsub config");
            Peer {
                gossipsub: gossipsub::Behaviour::new(
                    MessageAuthenticity::Signed(key.clone()),
                    config,
                )
                .expect("gossipsub"),
                identify: identify::Behaviour::new(
                    identify::Config::new("ipfs/0.1.0".into(), key.public())
                        .with_agent_version(format!("keyed-peer/{kind}")),
                ),
            }
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    line(json!({"peer": swarm.local_peer_id().to_string(), "key": kind}));
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    swarm.dial(target)?;
    let topic = IdentTopic::new("temperature");
    swarm.behaviour_mut().gossipsub.subscribe(&topic)?;

    let source = format!("keyed-peer-{kind}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    // EOF on stdin ends the peer: a thread reads it (tokio's stdin is not enabled here).
    let (eof_tx, mut eof) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
        let _ = eof_tx.send(());
    });
    // Set when the target subscribes; the reading goes out a little later (mesh heartbeat).
    let mut publish_at: Option<tokio::time::Instant> = None;
    let mut published = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = &mut eof => break,
            _ = tick.tick() => {
                if published || publish_at.is_none_or(|t| tokio::time::Instant::now() < t) {
                    continue;
                }
                let r = Reading {
                    joins: Vec::new(),
                    aqi: None,
                    seq: 1,
                    prev: None,
                    time: now_ms(),
                    unit: "°C".into(),
                    topic: "temperature".into(),
                    value: 21.5,
                    source: source.clone(),
                };
                let (cid, bytes) = r.encode();
                match swarm.behaviour_mut().gossipsub.publish(topic.clone(), bytes) {
                    Ok(_) => {
                        published = true;
                        line(json!({"published": cid.to_string(), "source": source}));
                    }
                    Err(e) => eprintln!("publish not sent yet: {e}"),
                }
            }
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::Behaviour(PeerEvent::Gossipsub(gossipsub::Event::Subscribed { topic: t, .. }))
                    if t == topic.hash() && publish_at.is_none() =>
                {
                    publish_at = Some(tokio::time::Instant::now() + Duration::from_millis(1500));
                }
                SwarmEvent::Behaviour(PeerEvent::Gossipsub(gossipsub::Event::Message { message, .. })) => {
                    // The CID of the bytes as they arrived: equal to the publisher's if no hop
                    // re-encoded them.
                    let cid = sensornet::reading::cid_of(sensornet::reading::DAG_CBOR, &message.data);
                    match Reading::decode(&message.data) {
                        Ok(r) => line(json!({
                            "received": cid.to_string(),
                            "from": message.source.map(|p| p.to_string()),
                            "source": r.source,
                        })),
                        Err(e) => line(json!({"undecodable": e.to_string()})),
                    }
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    eprintln!("dial failed: {error}");
                }
                _ => {}
            },
        }
    }
    Ok(())
}
