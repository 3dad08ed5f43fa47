//! `node/status`: what the dashboard's status panel shows, in one JSON answer: readiness,
//! peers, topics (peers subscribed, mesh, bytes, retention), the latest reading of every source,
//! store and disk size, catch-up counters.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, ApiState};
use crate::reading::Reading;

/// `node/status`.
pub async fn status(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let store = s.store.clone();
    let (heads, holes, stats, stored_topics) = tokio::task::spawn_blocking(move || {
        let heads = store.heads(&[])?;
        // The newest head of each source carries its latest value.
        let mut latest: std::collections::BTreeMap<(String, String), (u64, Value)> =
            Default::default();
        for h in heads {
            let Some(r) = store.get(&h.cid)?.and_then(|b| Reading::decode(&b).ok()) else {
                continue;
            };
            let key = (h.topic.clone(), h.source.clone());
            if latest.get(&key).is_some_and(|(t, _)| *t > r.time) {
                continue;
            }
            let mut v = json!({
                "topic": r.topic, "source": r.source, "seq": r.seq, "time": r.time,
                "value": r.value, "unit": r.unit, "cid": h.cid.to_string(),
            });
            if let Some(aqi) = r.aqi {
                v["aqi"] = json!(aqi);
            }
            latest.insert(key, (r.time, v));
        }
        let holes = store.hole_counts()?;
        let stats = store.stats()?;
        let mut topics = Vec::new();
        for t in store.topics()? {
            let bytes = store.topic_bytes(&t)?;
            topics.push((t, bytes));
        }
        Ok::<_, crate::store::StoreError>((latest, holes, stats, topics))
    })
    .await
    .map_err(ApiError::internal)??;

    let mut topic_names: Vec<String> = s.topics.clone();
    for (t, _) in &stored_topics {
        if !topic_names.contains(t) {
            topic_names.push(t.clone());
        }
    }
    let mut topics = Vec::new();
    for t in &topic_names {
        let peers = s.net.topic_peers(Some(t.clone())).await?.len();
        let mesh = s.net.mesh_peers(t).await?;
        let r = s.retention.for_topic(t);
        let bytes = stored_topics
            .iter()
            .find(|(n, _)| n == t)
            .map_or(0, |(_, b)| *b);
        let t_holes: u64 = holes
            .iter()
            .filter(|((ht, _), _)| ht == t)
            .map(|(_, n)| *n)
            .sum();
        topics.push(json!({
            "Topic": t, "Subscribed": s.topics.contains(t), "Peers": peers, "Mesh": mesh, "Bytes": bytes,
            "Holes": t_holes,
            "Retention": {"MaxAge": humantime::format_duration(r.max_age).to_string(), "MaxBytes": r.max_bytes},
        }));
    }
    let sources: Vec<Value> = heads
        .into_iter()
        .map(|((t, src), (_, mut v))| {
            v["holes"] = json!(holes.get(&(t, src)).copied().unwrap_or(0));
            v
        })
        .collect();
    let m = &s.metrics;
    let peers: Vec<Value> = s
        .net
        .peers()
        .into_iter()
        .map(|p| json!({"Peer": p.peer.to_string(), "Addr": p.addr.to_string(), "Outbound": p.outbound}))
        .collect();
    Ok(Json(json!({
        "ID": s.net.local.to_string(),
        "Version": env!("CARGO_PKG_VERSION"),
        "Ready": *s.ready.borrow(),
        "Now": crate::clock::now_ms(),
        "Peers": peers,
        "Topics": topics,
        "Sources": sources,
        "Store": {"Blocks": stats.blocks, "Bytes": stats.bytes},
        "Disk": {"Free": m.disk_free.get(), "Total": m.disk_total.get()},
        "Catchup": {
            "Fetched": m.catchup_fetched.get(), "Lag": m.catchup_lag.get(),
            "Gaps": m.catchup_gaps.get(), "Holes": m.catchup_holes.get(),
        },
    })))
}
