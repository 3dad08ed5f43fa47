//! Housekeeping: store and disk gauges every few seconds, and retention: readings older than
//! their topic's window go, then the oldest while a topic holds more than its byte budget.

use std::path::PathBuf;
use std::time::Duration;

use crate::clock::now_ms;
use crate::config::RetentionPolicy;
use crate::metrics::Metrics;
use crate::store::{Batch, Store};

/// How often the gauges are refreshed.
const TICK: Duration = Duration::from_secs(5);
/// Readings removed per transaction.
const CHUNK: usize = 5000;

/// Runs until cancelled: gauges every tick; retention once a minute, or every tick when a
/// window is shorter than a minute.
pub async fn run(store: Store, policy: RetentionPolicy, metrics: Metrics, disk: PathBuf) {
    let mut tick = tokio::time::interval(TICK);
    let short = policy.shortest_age() < Duration::from_secs(60);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        if let Ok(s) = store.stats() {
            metrics.store_blocks.set(s.blocks as i64);
            metrics.store_bytes.set(s.bytes as i64);
        }
        if let Ok(fs) = nix::sys::statvfs::statvfs(&disk) {
            let frag = fs.fragment_size() as i64;
            metrics.disk_free.set(fs.blocks_available() as i64 * frag);
            metrics.disk_total.set(fs.blocks() as i64 * frag);
        }
        if short || n % 12 == 0 {
            collect_garbage(&store, &policy).await;
        }
        n += 1;
    }
}

/// Drops readings older than their topic's retention window, then the oldest ones while the
/// topic holds more than its byte budget.
pub async fn collect_garbage(store: &Store, policy: &RetentionPolicy) {
    let Ok(topics) = store.topics() else {
        return;
    };
    for topic in topics {
        let retention = policy.for_topic(&topic);
        let horizon = policy.horizon(&topic, now_ms());
        let over = || {
            store
                .topic_bytes(&topic)
                .map(|b| b.saturating_sub(retention.max_bytes))
                .unwrap_or(0)
        };
        let mut excess = over();
        while let Ok(mut old) = store.expired(&topic, horizon, CHUNK) {
            if old.is_empty() && excess > 0 {
                // Within the age window but over budget: the oldest go, ~150 bytes each.
                let n = (excess / 100).clamp(1, CHUNK as u64) as usize;
                old = store.expired(&topic, u64::MAX, n).unwrap_or_default();
            }
            if old.is_empty() {
                break;
            }
            let n = old.len();
            let expire = old
                .into_iter()
                .map(|(t, c)| (topic.clone(), t, c))
                .collect();
            if let Err(e) = store
                .write(Batch {
                    expire,
                    ..Batch::default()
                })
                .await
            {
                tracing::warn!(%topic, error = %e, "retention failed");
                break;
            }
            tracing::info!(%topic, readings = n, "retention removed old readings");
            excess = over();
            if n < CHUNK && excess == 0 {
                break;
            }
        }
    }
}
