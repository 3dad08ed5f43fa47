//! The floor under sensornet's overhead: a bare rust-libp2p gossipsub node with the same
//! transports (TCP + Noise + Yamux) and no store, no validation, no API.
//!   bare-gossip --listen ADDR [--dial ADDR]... [--rate N --seconds S --size B]
//! Prints `listening <multiaddr>`; a publisher prints `sent N` at the end; every node prints
//! `recv <send unix ns> <receive unix ns>` per message received.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let dials: Vec<Multiaddr> = args
        .windows(2)
        .filter(|w| w[0] == "--dial")
        .filter_map(|w| w[1].parse().ok())
        .collect();
    let rate: u64 = get("--rate").and_then(|v| v.parse().ok()).unwrap_or(0);
    let seconds: u64 = get("--seconds").and_then(|v| v.parse().ok()).unwrap_or(0);
    let size: usize = get("--size").and_then(|v| v.parse().ok()).unwrap_or(150);
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            let config = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(700))
                .build()
                .expect("config");
            gossipsub::Behaviour::<
                gossipsub::IdentityTransform,
                gossipsub::AllowAllSubscriptionFilter,
            >::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)
            .expect("gossipsub")
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    let topic = IdentTopic::new("bench");
    swarm.behaviour_mut().subscribe(&topic)?;
    swarm.listen_on(
        get("--listen")
            .unwrap_or_else(|| "/ip4/127.0.0.1/tcp/0".into())
            .parse()?,
    )?;
    for d in dials {
        swarm.dial(d)?;
    }
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    let start = tokio::time::Instant::now() + Duration::from_secs(3); // let the mesh form
    let end = start + Duration::from_secs(seconds);
    let mut sent = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick(), if rate > 0 => {
                let now = tokio::time::Instant::now();
                if now >= end {
                    println!("sent {sent}");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    return Ok(());
                }
                if now >= start {
                    let mut data = now_ns().to_be_bytes().to_vec();
                    data.resize(size, 0);
                    data[8..16].copy_from_slice(&sent.to_be_bytes());
                    if swarm.behaviour_mut().publish(topic.clone(), data).is_ok() {
                        sent += 1;
                    }
                }
            }
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::NewListenAddr { address, .. } => println!("listening {address}/p2p/{}", swarm.local_peer_id()),
                SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) => {
                    let t = u64::from_be_bytes(message.data[..8].try_into().unwrap_or([0; 8]));
                    println!("recv {t} {}", now_ns());
                }
                _ => {}
            },
        }
    }
}
