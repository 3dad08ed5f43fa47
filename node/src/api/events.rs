//! `reading/events?topic=…[&topic=…]`: live readings of several topics as Server-Sent Events
//! over the bus subscriptions (the dashboard's feed; one connection for every chart).

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;

use super::readings::reading_json;
use super::{ApiError, ApiState, Args};
use crate::bus::{Delivery, Received};
use crate::reading::canonical_topic;

/// Most topics one stream follows (each joins the topic's gossip mesh).
pub const MAX_TOPICS: usize = 16;
/// A comment line this often keeps proxies from closing a quiet stream.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// `reading/events`: `event: reading` per reading, `event: dropped` when this client fell
/// behind; the node's own topics when none is given.
pub async fn events(
    State(s): State<ApiState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let a = Args::parse(q.as_deref());
    let mut topics: Vec<String> = a
        .all("topic")
        .map(|t| canonical_topic(t).to_string())
        .collect();
    if topics.is_empty() {
        topics = s.topics.clone();
    }
    topics.dedup();
    if topics.len() > MAX_TOPICS {
        return Err(ApiError::bad(format!(
            "{} topics asked; at most {MAX_TOPICS} per stream",
            topics.len()
        )));
    }
    let mut streams = Vec::new();
    for t in &topics {
        let mut sub = s.bus.subscribe(t).await;
        streams.push(
            async_stream::stream! {
                while let Some(got) = sub.recv().await {
                    match got {
                        Received::Delivery(d) => {
                            if let Delivery::Reading { cid, reading, backfilled, .. } = d.as_ref() {
                                yield format!("event: reading\ndata: {}\n\n", reading_json(cid, reading, *backfilled));
                            }
                        }
                        Received::Dropped(n) => yield format!("event: dropped\ndata: {}\n\n", json!({"dropped": n})),
                    }
                }
            }
            .boxed(),
        );
    }
    let keepalive = async_stream::stream! {
        let mut tick = tokio::time::interval(KEEPALIVE);
        loop {
            tick.tick().await;
            yield ": keepalive\n\n".to_string();
        }
    }
    .boxed();
    streams.push(keepalive);
    // The retry hint, then everything as it comes.
    let body = futures::stream::iter([String::from("retry: 2000\n\n")])
        .chain(futures::stream::select_all(streams))
        .map(Ok::<_, std::convert::Infallible>);
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
