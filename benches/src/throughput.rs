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

/// The sum of every series of a counter family on a node's `/metrics`.
fn family_sum(node: &Daemon, name: &str) -> f64 {
    let Ok((_, text)) = node.get_metrics("/metrics") else {
        return f64::NAN;
    };
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Readings and gossip messages node 0 has published so far.
fn published(node: &Daemon) -> (f64, f64) {
    (
        family_sum(node, "sensornet_readings_published_total"),
        family_sum(node, "libp2p_gossipsub_topic_msg_published_total"),
    )
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
    let before = published(&nodes[0]);
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
    let after = published(&nodes[0]);
    // Readings per gossip message: what bundling folded (1.0 when every reading went alone).
    let per_message = (after.0 - before.0) / (after.1 - before.1).max(1.0);
    // Replication: both other nodes link every acknowledged reading (or the wait ends).
    let prefix = format!("{tag}-");
    let linked = |n: &Daemon| n.linked(topic, &prefix);
    let _ = eventually(Duration::from_secs(60), "replicas catch up", || {
        Ok(nodes[1..].iter().all(|n| linked(n) >= acked).then_some(()))
    });
    let received = nodes[1..].iter().map(&linked).min().unwrap_or(0);
    json!({
        "clients": clients, "batch": batch, "secs": elapsed,
        "sent": sent.load(Ordering::Relaxed), "acked": acked,
        "stored_node0": linked(&nodes[0]),
        "received": received, "lost": acked.saturating_sub(received),
        "rate": acked as f64 / elapsed,
        "cpu": cpu.per_item(acked),
        "readings_per_gossip_message": per_message,
    })
}
