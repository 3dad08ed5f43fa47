//! sensornet's own routes: publish a reading, follow a topic, list heads (history: `history.rs`).

use std::collections::HashSet;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{stream_headers, ApiError, ApiState, Args};
use crate::bus::{Delivery, Received};
use crate::clock::now_ms;
use crate::publish::{NewReading, PublishError};
use crate::reading::{canonical_topic, Reading};

/// A reading as the API shows it.
pub fn reading_json(cid: &cid::Cid, r: &Reading, backfilled: bool) -> Value {
    let mut v = json!({
        "cid": cid.to_string(),
        "topic": r.topic,
        "source": r.source,
        "seq": r.seq,
        "time": r.time,
        "value": r.value,
        "unit": r.unit,
        "prev": r.prev.map(|p| p.to_string()),
        "backfilled": backfilled,
        "delay_ms": now_ms().saturating_sub(r.time),
    });
    if let Some(aqi) = r.aqi {
        v["aqi"] = json!(aqi);
    }
    if !r.joins.is_empty() {
        v["joins"] = json!(r.joins.iter().map(|c| c.to_string()).collect::<Vec<_>>());
    }
    v
}

fn since_ms(args: &Args) -> Result<Option<u64>, ApiError> {
    args.get("since")
        .map(|s| {
            humantime::parse_duration(s)
                .map(|d| now_ms().saturating_sub(d.as_millis() as u64))
                .map_err(|e| ApiError::bad(format!("since {s:?}: {e}; use e.g. 10m, 2h, 7days")))
        })
        .transpose()
}

/// `reading/pub?topic=&value=[&unit=][&source=][&time=][&aqi=]`: answers once durable.
pub async fn publish(
    State(s): State<ApiState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let a = Args::parse(q.as_deref());
    let new = NewReading {
        topic: a.require("topic")?.to_string(),
        value: a
            .parsed::<f64>("value")?
            .ok_or_else(|| ApiError::bad("argument \"value\" is required"))?,
        unit: a.get("unit").map(str::to_string),
        source: a.get("source").map(str::to_string),
        time: a.parsed("time")?,
        aqi: a.parsed("aqi")?,
    };
    let (cid, r) = s.publisher.publish_reading(new).await?;
    Ok(Json(json!({
        "Cid": cid.to_string(), "Topic": r.topic, "Source": r.source, "Seq": r.seq,
        "Time": r.time, "Value": r.value, "Unit": r.unit,
    })))
}

/// Most readings one `reading/pub-batch` request may carry.
pub const MAX_BATCH: usize = 10_000;
/// Largest `reading/pub-batch` body: [`MAX_BATCH`] lines of up to 400 bytes.
pub const MAX_BATCH_BODY: usize = MAX_BATCH * 400;

/// One line of a `reading/pub-batch` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchLine {
    topic: String,
    value: f64,
    unit: Option<String>,
    source: Option<String>,
    time: Option<u64>,
    aqi: Option<u16>,
}

/// `reading/pub-batch`: the body is NDJSON, one reading per line
/// (`{"topic":"temp","value":21.5,"source":"s1"}`, the keys of `reading/pub`); all or nothing,
/// in one durable commit, answered once durable with one line per reading in order.
pub async fn publish_batch(
    State(s): State<ApiState>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError {
        status: e.status(),
        message: format!(
            "reading the batch: {e} (at most {MAX_BATCH_BODY} bytes and {MAX_BATCH} readings per request: split it)"
        ),
    })?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad(format!("the body is not UTF-8 text: {e}")))?;
    let mut news = Vec::new();
    let mut line_of = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if news.len() == MAX_BATCH {
            return Err(ApiError::bad(format!(
                "more than {MAX_BATCH} readings in one batch: split it into several requests"
            )));
        }
        let l: BatchLine = serde_json::from_str(line).map_err(|e| {
            ApiError::bad(format!(
                "line {}: {e}; each line is a JSON object such as {{\"topic\":\"temperature\",\"value\":21.5}}; nothing of the batch was published",
                i + 1
            ))
        })?;
        line_of.push(i + 1);
        news.push(NewReading {
            topic: l.topic,
            value: l.value,
            unit: l.unit,
            source: l.source,
            time: l.time,
            aqi: l.aqi,
        });
    }
    if news.is_empty() {
        return Err(ApiError::bad(
            "the body holds no readings: send NDJSON, one {\"topic\":…,\"value\":…} object per line",
        ));
    }
    let done = s.publisher.publish_batch(news).await.map_err(|e| match e {
        PublishError::InBatch { index, error } => ApiError::bad(format!(
            "line {}: {error}; nothing of the batch was published",
            line_of[index - 1]
        )),
        other => other.into(),
    })?;
    let mut out = String::with_capacity(done.len() * 120);
    for (cid, r) in &done {
        out.push_str(
            &json!({"Cid": cid.to_string(), "Topic": r.topic, "Source": r.source, "Seq": r.seq, "Time": r.time})
                .to_string(),
        );
        out.push('\n');
    }
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        out,
    )
        .into_response())
}

/// `reading/heads[?topic=]`: the head of every source, with its holes (readings missing
/// below the head that no peer could supply yet).
pub async fn heads(
    State(s): State<ApiState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let a = Args::parse(q.as_deref());
    let topics: Vec<String> = a
        .get("topic")
        .map(|t| vec![canonical_topic(t).to_string()])
        .unwrap_or_default();
    let heads = s.store.heads(&topics)?;
    let holes = s.store.hole_counts()?;
    Ok(Json(json!({"Heads": heads.iter().map(|h| json!({
        "topic": h.topic, "source": h.source, "seq": h.seq, "cid": h.cid.to_string(),
        "holes": holes.get(&(h.topic.clone(), h.source.clone())).copied().unwrap_or(0),
    })).collect::<Vec<_>>()})))
}

/// `reading/sub?topic=[&since=]`: replays history since then, then follows live.
pub async fn subscribe(
    State(s): State<ApiState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let a = Args::parse(q.as_deref());
    let topic = canonical_topic(a.require("topic")?).to_string();
    let since = since_ms(&a)?;
    // Subscribe before reading history so nothing falls between the two.
    let mut sub = s.bus.subscribe(&topic).await;
    let replay = match since {
        Some(since) => {
            let store = s.store.clone();
            let t = topic.clone();
            tokio::task::spawn_blocking(move || store.history(&t, since, usize::MAX))
                .await
                .map_err(ApiError::internal)??
        }
        None => Vec::new(),
    };
    let stream = async_stream::stream! {
        let mut seen: HashSet<cid::Cid> = HashSet::new();
        // An empty first line makes proxies and clients see the stream open at once.
        yield Ok::<_, std::convert::Infallible>(String::new());
        for r in replay {
            seen.insert(r.cid);
            yield Ok(format!("{}\n", reading_json(&r.cid, &r.reading, true)));
        }
        while let Some(got) = sub.recv().await {
            match got {
                Received::Delivery(d) => {
                    if let Delivery::Reading { cid, reading, backfilled, .. } = d.as_ref() {
                        if !seen.is_empty() && seen.remove(cid) {
                            continue;
                        }
                        yield Ok(format!("{}\n", reading_json(cid, reading, *backfilled)));
                    }
                }
                Received::Dropped(n) => yield Ok(format!("{}\n", json!({"dropped": n}))),
            }
        }
    };
    Ok((stream_headers(), Body::from_stream(stream)).into_response())
}
