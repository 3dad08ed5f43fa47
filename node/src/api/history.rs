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
use crate::history::{self, read_page, Buckets, Cursor, HistoryQuery, Page, TimeRange};
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
    let mut after = None;
    loop {
        let p = next_page(store, q, after)?;
        out.extend(p.readings);
        match p.next {
            Some(n) if out.len() < cap => after = Some(n),
            _ => {
                out.truncate(cap);
                return Ok(out);
            }
        }
    }
}

fn next_page(store: &Store, q: &HistoryQuery, after: Option<Cursor>) -> Result<Page, ApiError> {
    Ok(read_page(
        store,
        &q.topic,
        q.range,
        q.source.as_deref(),
        after,
        PAGE,
        1,
    )?)
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
        tokio::task::spawn_blocking(move || next_page(&store, &q, None))
            .await
            .map_err(ApiError::internal)??
    };
    let stream = async_stream::stream! {
        let mut out = Answer {
            buckets: q.every_ms.map(Buckets::new),
            lines: String::new(),
            sent: 0,
            limit,
        };
        let mut more = head.iter().all(|r| out.add(r));
        drop(head);
        let mut page = first;
        while more {
            more = page.readings.iter().all(|r| out.add(r));
            if let Some(lines) = out.take() {
                yield Ok::<_, std::convert::Infallible>(lines);
            }
            let Some(after) = page.next.take().filter(|_| more) else { break };
            let (st, qq) = (store.clone(), q.clone());
            match tokio::task::spawn_blocking(move || next_page(&st, &qq, Some(after))).await {
                Ok(Ok(p)) => page = p,
                Ok(Err(e)) => {
                    yield Ok(error_line(&e.message));
                    break;
                }
                Err(e) => {
                    yield Ok(error_line(&e.to_string()));
                    break;
                }
            }
        }
        yield Ok(out.finish());
    };
    Ok((stream_headers(), Body::from_stream(stream)).into_response())
}

/// What a streamed answer gathers: buckets being filled, or raw lines up to the limit.
struct Answer {
    buckets: Option<Buckets>,
    lines: String,
    sent: usize,
    limit: usize,
}

impl Answer {
    /// Adds a reading; false once a raw answer holds `limit` lines.
    fn add(&mut self, r: &StoredReading) -> bool {
        match self.buckets.as_mut() {
            Some(b) => {
                b.add(&r.reading);
                true
            }
            None if self.sent < self.limit => {
                self.lines
                    .push_str(&reading_json(&r.cid, &r.reading, false).to_string());
                self.lines.push('\n');
                self.sent += 1;
                self.sent < self.limit
            }
            None => false,
        }
    }

    /// The raw lines gathered since the last call, if any.
    fn take(&mut self) -> Option<String> {
        (!self.lines.is_empty()).then(|| std::mem::take(&mut self.lines))
    }

    /// The rest: raw lines not taken yet, or every bucket (up to the limit).
    fn finish(mut self) -> String {
        if let Some(b) = self.buckets.take() {
            for b in b.finish().into_iter().take(self.limit) {
                self.lines.push_str(&json!(b).to_string());
                self.lines.push('\n');
            }
        }
        self.lines
    }
}

/// An error after the answer began: a last line in Kubo's error shape.
fn error_line(message: &str) -> String {
    format!(
        "{}\n",
        json!({"Message": message, "Code": 0, "Type": "error"})
    )
}
