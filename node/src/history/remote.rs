//! Asking peers for history this node lacks (a topic it does not subscribe, or a range before
//! its retention horizon): every connected peer is asked in pages over `/sensornet/sync/1`;
//! each block is checked (CID, topic, range, source) before it is merged.

use std::time::Duration;

use futures::future::join_all;
use serde_bytes::ByteBuf;

use super::HistoryQuery;
use crate::p2p::protocol::{SyncRequest, SyncResponse, MAX_HISTORY_BLOCKS};
use crate::p2p::Handle;
use crate::reading::{cid_of, Reading, DAG_CBOR};
use crate::store::StoredReading;

/// Most peers asked for one query.
pub const MAX_PEERS: usize = 8;
/// Most readings taken from one peer for one query.
pub const MAX_PER_PEER: usize = 100_000;
/// How long one peer may take for all its pages.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(15);

/// What the peers answered, and how many were asked.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Readings per answering peer (unmerged).
    pub parts: Vec<Vec<StoredReading>>,
    /// Peers asked.
    pub asked: usize,
    /// Peers that answered.
    pub answered: usize,
}

/// Asks up to [`MAX_PEERS`] connected peers at once for at most `cap` readings each (at most
/// [`MAX_PER_PEER`]): a raw answer limited to its first N needs no more than N from each.
pub async fn fetch(net: &Handle, q: &HistoryQuery, cap: usize) -> Fetched {
    let cap = cap.clamp(1, MAX_PER_PEER);
    let peers: Vec<_> = net.peer_ids().into_iter().take(MAX_PEERS).collect();
    let asked = peers.len();
    let answers = join_all(peers.into_iter().map(|p| async move {
        match tokio::time::timeout(PEER_TIMEOUT, from_peer(net, p, q, cap)).await {
            Ok(Some(v)) => Some(v),
            Ok(None) => None,
            Err(_) => {
                tracing::debug!(peer = %p, "history: peer too slow, its answer is left out");
                None
            }
        }
    }))
    .await;
    let parts: Vec<_> = answers.into_iter().flatten().collect();
    Fetched {
        answered: parts.len(),
        parts,
        asked,
    }
}

/// One peer's readings for the query, page by page; `None` when it could not answer.
async fn from_peer(
    net: &Handle,
    peer: libp2p::PeerId,
    q: &HistoryQuery,
    cap: usize,
) -> Option<Vec<StoredReading>> {
    let mut out = Vec::new();
    let mut after: Option<(u64, ByteBuf)> = None;
    loop {
        let req = SyncRequest::History {
            topic: q.topic.clone(),
            since: q.range.since_ms,
            until: q.range.until_ms,
            source: q.source.clone(),
            after: after.take(),
            max: MAX_HISTORY_BLOCKS.min(cap.saturating_sub(out.len()) as u32),
        };
        let (blocks, next) = match net.request(peer, req).await {
            Ok(SyncResponse::History { blocks, next }) => (blocks, next),
            Ok(SyncResponse::Error(e)) => {
                tracing::debug!(%peer, error = %e, "history: peer refused");
                return (!out.is_empty()).then_some(out);
            }
            Ok(_) | Err(_) => return (!out.is_empty()).then_some(out),
        };
        out.extend(blocks.iter().filter_map(|b| checked(b, q)));
        match next {
            Some(n) if out.len() < cap => after = Some(n),
            _ => {
                out.truncate(cap);
                return Some(out);
            }
        }
    }
}

/// A block as a reading, if it is one that answers the query.
fn checked(bytes: &[u8], q: &HistoryQuery) -> Option<StoredReading> {
    let reading = Reading::decode(bytes).ok()?;
    reading.validate().ok()?;
    let ok = reading.topic == q.topic
        && q.range.contains(reading.time)
        && q.source.as_ref().is_none_or(|s| *s == reading.source);
    ok.then(|| StoredReading {
        cid: cid_of(DAG_CBOR, bytes),
        reading,
    })
}
