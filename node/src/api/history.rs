//! `reading/history`: a topic's readings (or per-source buckets) in a time range, streamed as
//! JSON lines. Answered from the local store page by page; merged with peers' answers when
//! this node lacks the topic or the range (see [`crate::history::needs_peers`]).

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::HeaderName;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::readings::reading_json;
use super::{stream_headers, ApiError, ApiState, Args};
use crate::clock::now_ms;
use crate::history::{self, Buckets, HistoryQuery};
use crate::reading::canonical_topic;
use crate::store::{Store, StoredReading};

/// Readings read from the store per page of a streamed answer.
const PAGE: usize = 1000;

/// `reading/history?topic=[&since=][&until=][&every=][&source=][&limit=][&local=true]`.
pub async fn history(
    State(s): State<ApiState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let a = Args::parse(q.as_deref());
    let topic = canonical_topic(a.require("topic")?).to_string();
    let now = now_ms();
    let query = HistoryQuery::parse(
        &topic,
        a.get("since"),
        a.get("until"),
        a.get("every"),
        a.get("source"),
        now,
    )
    .map_err(|e| ApiError::bad(e.to_string()))?;
    let limit = a.parsed::<usize>("limit")?.unwrap_or(usize::MAX);
    let ask_peers = !a.flag("local") && history::needs_peers(&query, &s.topics, &s.retention, now);
    if !ask_peers {
        return local_stream(s.store.clone(), query, limit).await;
    }
    // Raw readings oldest first: each part's first `limit` are enough for the merged first.
    let cap = match query.every_ms {
        Some(_) => history::remote::MAX_PER_PEER,
        None => limit.min(history::remote::MAX_PER_PEER),
    };
    let local = {
        let (store, q) = (s.store.clone(), query.clone());
        tokio::task::spawn_blocking(move || read_all(&store, &q, cap))
            .await
            .map_err(ApiError::internal)??
    };
    let fetched = history::remote::fetch(&s.net, &query, cap).await;
    tracing::debug!(topic = %query.topic, asked = fetched.asked, answered = fetched.answered, "history: asked peers");
    let merged = history::merge(std::iter::once(local).chain(fetched.parts));
    let mut body = String::new();
    match query.every_ms {
        Some(every) => {
            for b in history::bucketize(&merged, every).into_iter().take(limit) {
                body.push_str(&json!(b).to_string());
                body.push('\n');
            }
        }
        None => {
            for r in merged.iter().take(limit) {
                body.push_str(&reading_json(&r.cid, &r.reading, false).to_string());
                body.push('\n');
            }
        }
    }
    Ok((
        stream_headers(),
        [(
            HeaderName::from_static("x-sensornet-peers"),
            format!("{}/{}", fetched.answered, fetched.asked),
        )],
        body,
    )
        .into_response())
}

/// The first `cap` local readings of the query (for merging with peers' answers).
fn read_all(store: &Store, q: &HistoryQuery, cap: usize) -> Result<Vec<StoredReading>, ApiError> {
    let mut out = Vec::new();
    let mut cursor: Option<(u64, Vec<u8>)> = None;
    loop {
        let page = next_page(store, q, &cursor)?;
        let done = page.len() < PAGE;
        if let Some(last) = page.last() {
            cursor = Some((last.reading.time, last.cid.to_bytes()));
        }
        out.extend(page.into_iter().filter(|r| matches(q, r)));
        if done || out.len() >= cap {
            out.truncate(cap);
            return Ok(out);
        }
    }
}

fn next_page(
    store: &Store,
    q: &HistoryQuery,
    cursor: &Option<(u64, Vec<u8>)>,
) -> Result<Vec<StoredReading>, ApiError> {
    Ok(store.history_page(
        &q.topic,
        q.range.since_ms,
        q.range.until_ms,
        cursor.as_ref().map(|(t, c)| (*t, c.as_slice())),
        PAGE,
    )?)
}

fn matches(q: &HistoryQuery, r: &StoredReading) -> bool {
    q.source.as_ref().is_none_or(|s| *s == r.reading.source)
}

/// The local answer: raw readings stream page by page as they are read; buckets are
/// accumulated over the pages (memory per bucket, not per reading) and sent at the end.
async fn local_stream(store: Store, q: HistoryQuery, limit: usize) -> Result<Response, ApiError> {
    // The first page is read before answering, so a store error is a proper error status.
    let first = {
        let (store, q) = (store.clone(), q.clone());
        tokio::task::spawn_blocking(move || next_page(&store, &q, &None))
            .await
            .map_err(ApiError::internal)??
    };
    let stream = async_stream::stream! {
        let mut page = first;
        let mut sent = 0usize;
        let mut buckets = q.every_ms.map(Buckets::new);
        loop {
            let done = page.len() < PAGE;
            let cursor = page.last().map(|r| (r.reading.time, r.cid.to_bytes()));
            let mut lines = String::new();
            for r in page.iter().filter(|r| matches(&q, r)) {
                match buckets.as_mut() {
                    Some(b) => b.add(&r.reading),
                    None if sent < limit => {
                        lines.push_str(&reading_json(&r.cid, &r.reading, false).to_string());
                        lines.push('\n');
                        sent += 1;
                    }
                    None => {}
                }
            }
            if !lines.is_empty() {
                yield Ok::<_, std::convert::Infallible>(lines);
            }
            if done || (buckets.is_none() && sent >= limit) {
                break;
            }
            let (st, qq) = (store.clone(), q.clone());
            match tokio::task::spawn_blocking(move || next_page(&st, &qq, &cursor)).await {
                Ok(Ok(p)) => page = p,
                Ok(Err(e)) => {
                    yield Ok(format!("{}\n", json!({"Message": e.message, "Code": 0, "Type": "error"})));
                    break;
                }
                Err(e) => {
                    yield Ok(format!("{}\n", json!({"Message": e.to_string(), "Code": 0, "Type": "error"})));
                    break;
                }
            }
        }
        if let Some(b) = buckets {
            let mut lines = String::new();
            for b in b.finish().into_iter().take(limit) {
                lines.push_str(&json!(b).to_string());
                lines.push('\n');
            }
            yield Ok(lines);
        }
    };
    Ok((stream_headers(), Body::from_stream(stream)).into_response())
}
