//! Durable throughput through node 0 of a three-node mesh over HTTP, one reading per request
//! (`reading/pub`) or many (`reading/pub-batch`): acknowledged = fsync'd on node 0; received =
//! linked on both other nodes (the worst of the two); lost = acknowledged − received; CPU µs
//! per reading on each node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sensornet_tests::{eventually, http, Daemon};
use serde_json::{json, Value};

use crate::cpu::Meter;

/// Readings of the sources `{tag}-*` of `topic` that `node` holds linked (head seq − holes).
fn linked(node: &Daemon, topic: &str, tag: &str) -> u64 {
    let Ok(v) = node.post_json(&format!("reading/heads?topic={topic}")) else {
        return 0;
    };
    let prefix = format!("{tag}-");
    v["Heads"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["source"].as_str().is_some_and(|s| s.starts_with(&prefix)))
        .map(|h| {
            h["seq"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(h["holes"].as_u64().unwrap_or(0))
        })
        .sum()
}

fn meter(nodes: &[Daemon]) -> Meter {
    Meter::start(
        nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((format!("node{i}"), n.pid()?)))
            .collect(),
    )
}

/// `clients` concurrent publishers for `secs`, each sending `batch` readings per request
/// (1: `reading/pub`, more: `reading/pub-batch`).
pub fn run(nodes: &[Daemon], clients: usize, batch: usize, secs: u64, tag: &str) -> Value {
    let topic = "humidity";
    let (sent, acked) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let cpu = meter(nodes);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for c in 0..clients {
            let (sent, acked, api) = (sent.clone(), acked.clone(), nodes[0].api.clone());
            s.spawn(move || {
                let client = http();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let (url, body) = if batch == 1 {
                        (
                            format!(
                                "http://{api}/api/v0/reading/pub?topic={topic}&value={}&source={tag}-{c}",
                                40 + i % 20
                            ),
                            String::new(),
                        )
                    } else {
                        let body: String = (0..batch as u64)
                            .map(|k| {
                                format!(
                                    "{{\"topic\":\"{topic}\",\"value\":{},\"source\":\"{tag}-{c}\"}}\n",
                                    40 + (i + k) % 20
                                )
                            })
                            .collect();
                        (format!("http://{api}/api/v0/reading/pub-batch"), body)
                    };
                    sent.fetch_add(batch as u64, Ordering::Relaxed);
                    let ok = client
                        .post(url)
                        .body(body)
                        .send()
                        .map(|r| r.status().is_success())
                        .unwrap_or(false);
                    if ok {
                        acked.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                    i += batch as u64;
                }
            });
        }
    });
    let elapsed = t0.elapsed().as_secs_f64();
    let acked = acked.load(Ordering::Relaxed);
    // Replication: both other nodes link every acknowledged reading (or the wait ends).
    let _ = eventually(Duration::from_secs(60), "replicas catch up", || {
        Ok(nodes[1..]
            .iter()
            .all(|n| linked(n, topic, tag) >= acked)
            .then_some(()))
    });
    let received = nodes[1..]
        .iter()
        .map(|n| linked(n, topic, tag))
        .min()
        .unwrap_or(0);
    json!({
        "clients": clients, "batch": batch, "secs": elapsed,
        "sent": sent.load(Ordering::Relaxed), "acked": acked,
        "stored_node0": linked(&nodes[0], topic, tag),
        "received": received, "lost": acked.saturating_sub(received),
        "rate": acked as f64 / elapsed,
        "cpu": cpu.per_item(acked),
    })
}
