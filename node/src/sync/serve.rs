//! Answers peers' sync requests from the store (off the async workers: chain walks read disk).

use std::sync::Arc;

use libp2p::request_response::ResponseChannel;
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, Semaphore};

use crate::history::{read_page, TimeRange};
use crate::p2p::protocol::{
    ChainEnd, SyncRequest, SyncResponse, WireHead, MAX_CHAIN_BLOCKS, MAX_HISTORY_BLOCKS,
};
use crate::p2p::{Handle, InboundRequest};
use crate::store::Store;

/// Requests answered at once; more wait in the queue (bounded by the swarm).
const CONCURRENT_ANSWERS: usize = 16;

/// Answers peers' requests until the swarm stops.
pub async fn run(store: Store, net: Handle, mut requests: mpsc::Receiver<InboundRequest>) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_ANSWERS));
    while let Some(r) = requests.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (store, net) = (store.clone(), net.clone());
        tokio::spawn(async move {
            answer(store, net, r.request, r.channel).await;
            drop(permit);
        });
    }
}

/// Computes the answer and sends it back through the swarm.
pub async fn answer(
    store: Store,
    net: Handle,
    request: SyncRequest,
    channel: ResponseChannel<SyncResponse>,
) {
    let resp = tokio::task::spawn_blocking(move || respond(&store, request))
        .await
        .unwrap_or_else(|e| SyncResponse::Error(format!("internal error: {e}")));
    net.respond(channel, resp).await;
}

fn respond(store: &Store, request: SyncRequest) -> SyncResponse {
    match request {
        SyncRequest::History {
            topic,
            since,
            until,
            source,
            after,
            max,
        } => {
            let range = TimeRange {
                since_ms: since,
                until_ms: until,
            };
            history(store, &topic, range, source.as_deref(), after, max)
        }
        SyncRequest::Heads { topics } => match store.heads(&topics) {
            Ok(heads) => SyncResponse::Heads(
                heads
                    .into_iter()
                    .map(|h| WireHead {
                        topic: h.topic,
                        source: h.source,
                        seq: h.seq,
                        cid: ByteBuf::from(h.cid.to_bytes()),
                    })
                    .collect(),
            ),
            Err(e) => SyncResponse::Error(e.to_string()),
        },
        SyncRequest::Chain {
            from,
            stop_seq,
            min_time,
            max,
        } => {
            let Ok(from) = cid::Cid::try_from(from.as_slice()) else {
                return SyncResponse::Error("from is not a CID".into());
            };
            let max = max.clamp(1, MAX_CHAIN_BLOCKS) as usize;
            match store.chain(&from, stop_seq, min_time, max) {
                Ok(blocks) => {
                    let end = match blocks.last() {
                        None => {
                            if store.has(&from).unwrap_or(false) {
                                ChainEnd::Done
                            } else {
                                ChainEnd::Missing
                            }
                        }
                        Some(_) if blocks.len() >= max => ChainEnd::Limit,
                        Some(last) => match crate::reading::Reading::decode(last) {
                            Ok(r) => match r.prev {
                                None => ChainEnd::Done,
                                Some(p) => {
                                    // The walk stopped before p: at the stop, the horizon, or a hole.
                                    if store.has(&p).unwrap_or(false) {
                                        ChainEnd::Done
                                    } else {
                                        ChainEnd::Missing
                                    }
                                }
                            },
                            Err(_) => ChainEnd::Missing,
                        },
                    };
                    SyncResponse::Chain {
                        blocks: blocks.into_iter().map(ByteBuf::from).collect(),
                        end,
                    }
                }
                Err(e) => SyncResponse::Error(e.to_string()),
            }
        }
    }
}

/// A page of local history (a source filter scans at most 8 store pages per request).
fn history(
    store: &Store,
    topic: &str,
    range: TimeRange,
    source: Option<&str>,
    after: Option<(u64, ByteBuf)>,
    max: u32,
) -> SyncResponse {
    let max = max.clamp(1, MAX_HISTORY_BLOCKS) as usize;
    let after = after.map(|(t, c)| (t, c.into_vec()));
    match read_page(store, topic, range, source, after, max, 8) {
        Ok(p) => SyncResponse::History {
            blocks: p
                .readings
                .iter()
                .map(|r| ByteBuf::from(r.reading.encode().1))
                .collect(),
            next: p.next.map(|(t, c)| (t, ByteBuf::from(c))),
        },
        Err(e) => SyncResponse::Error(e.to_string()),
    }
}
