//! `reading/history`: a topic's readings (or per-source buckets) in a time range, streamed as
//! JSON lines. The part this node lacks (see [`history::peer_range`]) is asked of its peers
//! and merged first; the rest streams from the local store page by page.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::readings::reading_json;
use super::{stream_headers, ApiError, ApiState, Args};
use crate::clock::now_ms;
use crate::history::{self, Buckets, HistoryQuery, TimeRange};
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
    let asked = match a.flag("local") {
        true => None,
        false => history::peer_range(&query, &s.topics, &s.retention, now),
    };
    let Some(range) = asked else {
        return local_stream(s.store.clone(), query, limit, Vec::new()).await;
    };
    // Raw readings oldest first: each part's first `limit` are enough for the merged first.
    let cap = match query.every_ms {
        Some(_) => history::remote::MAX_PER_PEER,
        None => limit.min(history::remote::MAX_PER_PEER),
    };
    let part = HistoryQuery {
        range,
        ..query.clone()
    };
    // What this node holds of that part too (not yet collected by retention, say).
    let local = {
        let (store, q) = (s.store.clone(), part.clone());
        tokio::task::spawn_blocking(move || read_all(&store, &q, cap))
            .await
            .map_err(ApiError::internal)??
    };
    let fetched = history::remote::fetch(&s.net, &part, cap).await;
    tracing::debug!(%topic, asked = fetched.asked, answered = fetched.answered, "history: asked peers");
    let head = history::merge(std::iter::once(local).chain(fetched.parts));
    let rest = HistoryQuery {
        range: TimeRange {
            since_ms: range.until_ms,
            until_ms: query.range.until_ms,
        },
        ..query
    };
    let mut resp = local_stream(s.store.clone(), rest, limit, head).await?;
    if let Ok(v) = HeaderValue::from_str(&format!("{}/{}", fetched.answered, fetched.asked)) {
        resp.headers_mut()
            .insert(HeaderName::from_static("x-sensornet-peers"), v);
    }
    Ok(resp)
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
    if q.range.since_ms >= q.range.until_ms {
        return Ok(Vec::new());
    }
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

/// `head` (already merged, older than the query's range), then the local readings of the
/// range: raw readings stream page by page as they are read; buckets are accumulated over the
/// pages (memory per bucket, not per reading) and sent at the end.
async fn local_stream(
    store: Store,
    q: HistoryQuery,
    limit: usize,
    head: Vec<StoredReading>,
) -> Result<Response, ApiError> {
    // The first page is read before answering, so a store error is a proper error status.
    let first = {
        let (store, q) = (store.clone(), q.clone());
        tokio::task::spawn_blocking(move || next_page(&store, &q, &None))
            .await
            .map_err(ApiError::internal)??
    };
    let stream = async_stream::stream! {
        let mut sent = 0usize;
        let mut buckets = q.every_ms.map(Buckets::new);
        let mut lines = String::new();
        for r in &head {
            match buckets.as_mut() {
                Some(b) => b.add(&r.reading),
                None if sent < limit => {
                    lines.push_str(&reading_json(&r.cid, &r.reading, false).to_string());
                    lines.push('\n');
                    sent += 1;
                }
                None => break,
            }
        }
        drop(head);
        if !lines.is_empty() {
            yield Ok::<_, std::convert::Infallible>(std::mem::take(&mut lines));
        }
        let mut page = first;
        loop {
            let done = page.len() < PAGE;
            let cursor = page.last().map(|r| (r.reading.time, r.cid.to_bytes()));
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
                yield Ok(std::mem::take(&mut lines));
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
            for b in b.finish().into_iter().take(limit) {
                lines.push_str(&json!(b).to_string());
                lines.push('\n');
            }
            yield Ok(lines);
        }
    };
    Ok((stream_headers(), Body::from_stream(stream)).into_response())
}
