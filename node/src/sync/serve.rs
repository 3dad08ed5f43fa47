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
use crate::store::{Store, WalkEnd};

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
                Ok(walk) => SyncResponse::Chain {
                    end: match walk.end {
                        WalkEnd::Done => ChainEnd::Done,
                        WalkEnd::Limit => ChainEnd::Limit,
                        WalkEnd::Missing => ChainEnd::Missing,
                    },
                    blocks: walk.blocks.into_iter().map(ByteBuf::from).collect(),
                },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{linked_batch, reading};
    use crate::store::Batch;
    use cid::Cid;

    fn chain_request(from: &Cid, max: u32) -> SyncRequest {
        SyncRequest::Chain {
            from: ByteBuf::from(from.to_bytes()),
            stop_seq: 0,
            min_time: 0,
            max,
        }
    }

    fn answer(store: &Store, from: &Cid, max: u32) -> (usize, ChainEnd) {
        match respond(store, chain_request(from, max)) {
            SyncResponse::Chain { blocks, end } => (blocks.len(), end),
            other => panic!("not a chain answer: {other:?}"),
        }
    }

    /// With no stop and no horizon, "no block, and the walk is done" can only be a lie: it
    /// makes the asker link a child past a parent nobody sent. Blocks committed while the
    /// answer is computed must not produce it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_block_committed_during_the_answer_is_never_reported_as_done_without_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("blocks.redb")).unwrap();
        const N: u64 = 300;
        let mut cids = Vec::new();
        let mut batches = Vec::new();
        let mut prev = None;
        for seq in 1..=N {
            let (cid, batch) = linked_batch(&reading(seq, prev));
            batches.push(batch);
            cids.push(cid);
            prev = Some(cid);
        }
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let asker = {
            let (store, cids, done) = (store.clone(), cids.clone(), done.clone());
            std::thread::spawn(move || {
                let mut asked = 0u64;
                for cid in &cids {
                    // Ask for the next block until it is there, as a peer catching up would.
                    loop {
                        asked += 1;
                        let (n, end) = answer(&store, cid, 1);
                        assert!(
                            n > 0 || end == ChainEnd::Missing,
                            "no block and {end:?} for a block being written"
                        );
                        if n > 0 || done.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                    }
                }
                asked
            })
        };
        for b in batches {
            store.write(b).await.unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let asked = asker.join().expect("no lie in any answer");
        assert!(asked > N, "the asker raced the writer ({asked} requests)");
    }

    #[tokio::test]
    async fn a_chain_answer_says_why_it_ended() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("blocks.redb")).unwrap();
        let first = reading(1, None);
        let (c1, b1) = first.encode();
        let second = reading(2, Some(c1));
        let (c2, b2) = second.encode();
        let third = reading(3, Some(c2));
        let (c3, b3) = third.encode();
        // 1 and 3 are here, 2 is not: a hole below 3.
        store
            .write(Batch {
                blocks: vec![(c1, b1), (c3, b3)],
                ..Batch::default()
            })
            .await
            .unwrap();
        assert_eq!(answer(&store, &c2, 10), (0, ChainEnd::Missing), "absent");
        assert_eq!(
            answer(&store, &c3, 10),
            (1, ChainEnd::Missing),
            "hole below"
        );
        assert_eq!(
            answer(&store, &c1, 10),
            (1, ChainEnd::Done),
            "first reading"
        );
        store
            .write(Batch {
                blocks: vec![(c2, b2)],
                ..Batch::default()
            })
            .await
            .unwrap();
        assert_eq!(answer(&store, &c3, 10), (3, ChainEnd::Done), "whole chain");
        assert_eq!(answer(&store, &c3, 2), (2, ChainEnd::Limit), "page full");
        let horizon = SyncRequest::Chain {
            from: ByteBuf::from(c3.to_bytes()),
            stop_seq: 0,
            min_time: 1_003,
            max: 10,
        };
        match respond(&store, horizon) {
            SyncResponse::Chain { blocks, end } => {
                assert_eq!((blocks.len(), end), (1, ChainEnd::Done), "horizon")
            }
            other => panic!("{other:?}"),
        }
    }
}
