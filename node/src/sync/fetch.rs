//! Fetches a source's missing chain by CID from peers, verifying that every block hashes to
//! the CID that asked for it; a peer that lies is penalised and the next one is asked.
//!
//! A peer that answers "I don't have it" is final for that block; a request that fails
//! (timeout, closed connection, busy peer) is not: the walk backs off and asks again, with
//! any peer that connected meanwhile, before it settles for a gap. A loaded cluster must not
//! turn a slow answer into a hole.

use std::collections::HashSet;
use std::time::Duration;

use cid::Cid;
use libp2p::PeerId;
use serde_bytes::ByteBuf;

use crate::metrics::Metrics;
use crate::p2p::protocol::{ChainEnd, SyncRequest, SyncResponse, MAX_CHAIN_BLOCKS};
use crate::p2p::{Handle, NetError};
use crate::reading::{verify_cid, Reading};
use crate::store::Store;

/// Rounds of failed requests retried before a gap is accepted (backoff 0.5 s doubling: ~60 s).
const RETRY_ROUNDS: u32 = 7;
/// First retry delay.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// What to fetch.
#[derive(Debug, Clone)]
pub struct Want {
    /// Newest missing block.
    pub target: Cid,
    /// Readings expected below it (sizes the first request; later ones double).
    pub expected: u64,
    /// Retention horizon (unix ms).
    pub min_time: u64,
    /// Peers to ask, best first.
    pub peers: Vec<PeerId>,
}

/// A fetched chain.
#[derive(Debug)]
pub struct Fetched {
    /// The wanted target.
    pub target: Cid,
    /// Blocks newest first: CID, reading, bytes.
    pub blocks: Vec<(Cid, Reading, Vec<u8>)>,
    /// False when no peer had the rest of the chain (a gap).
    pub complete: bool,
    /// The block the walk could not get, when incomplete.
    pub missing: Option<Cid>,
}

/// One peer's answer to "blocks from `cid` back".
enum Answer {
    /// Verified blocks newest first, and where the walk goes on (None: done).
    Blocks(Vec<(Cid, Reading, Vec<u8>)>, Option<Cid>, ChainEnd),
    /// The peer does not hold `cid`.
    Lacks,
    /// The request failed; the peer may answer later.
    Failed,
    /// The node is shutting down.
    Stopped,
}

/// What a chain fetch uses.
#[derive(Clone)]
pub struct Fetcher {
    /// Where requests go.
    pub net: Handle,
    /// Where the walk stops: at what is linked here.
    pub store: Store,
    /// Fetched and bad-block counters.
    pub metrics: Metrics,
}

impl Fetcher {
    /// Walks back from `want.target` until the chain meets what we have, the horizon or the start.
    pub async fn fetch_chain(&self, want: Want) -> Fetched {
        let mut blocks: Vec<(Cid, Reading, Vec<u8>)> = Vec::new();
        let mut next = Some(want.target);
        let mut peers = want.peers.clone();
        // Peers that said they lack `next` (reset whenever the walk moves on).
        let mut lacking: HashSet<PeerId> = HashSet::new();
        let mut rounds = 0;
        let mut complete = true;
        // Small gaps ask for a small page, big ones for the largest; each full page doubles.
        let mut page =
            (want.expected.saturating_mul(2) + 8).clamp(16, MAX_CHAIN_BLOCKS as u64) as u32;
        'walk: while let Some(cid) = next {
            if self.store.is_linked(&cid).unwrap_or(false) {
                break;
            }
            // With nobody connected, wait for someone rather than call it a gap.
            let mut failed = peers.is_empty();
            for &peer in &peers {
                if lacking.contains(&peer) {
                    continue;
                }
                match self.ask(peer, cid, &want, page).await {
                    Answer::Stopped => {
                        complete = false;
                        break 'walk;
                    }
                    Answer::Failed => failed = true,
                    Answer::Lacks => {
                        lacking.insert(peer);
                    }
                    Answer::Blocks(got, more, end) => {
                        let moved = !got.is_empty();
                        blocks.extend(got);
                        rounds = 0;
                        if moved {
                            lacking.clear();
                        }
                        if end == ChainEnd::Limit {
                            page = (page * 2).min(MAX_CHAIN_BLOCKS);
                        }
                        if end == ChainEnd::Missing || !moved {
                            // This peer's copy has a hole (or a bad block) here; ask the others.
                            lacking.insert(peer);
                        }
                        next = more;
                        continue 'walk;
                    }
                }
            }
            if failed && rounds < RETRY_ROUNDS {
                tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(rounds)).await;
                rounds += 1;
                // Ask who is connected now: peers that left (or were blacklisted) drop out, peers
                // that connected meanwhile may hold it.
                let now: Vec<PeerId> = self.net.peer_ids();
                peers.retain(|p| now.contains(p));
                for p in now {
                    if !peers.contains(&p) {
                        peers.push(p);
                    }
                }
                continue;
            }
            complete = false;
            break;
        }
        Fetched {
            target: want.target,
            blocks,
            complete,
            missing: if complete { None } else { next },
        }
    }

    /// Asks one peer for the chain from `cid` and verifies what comes back.
    async fn ask(&self, peer: PeerId, cid: Cid, want: &Want, page: u32) -> Answer {
        let req = SyncRequest::Chain {
            from: ByteBuf::from(cid.to_bytes()),
            // Heights do not order a source's history once it has siblings: the walk stops
            // where the asker holds a block (checked here), not at a seq.
            stop_seq: 0,
            min_time: want.min_time,
            max: page,
        };
        let (got, end) = match self.net.request(peer, req).await {
            Err(NetError::Stopped) => return Answer::Stopped,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "chain request failed; will retry");
                return Answer::Failed;
            }
            Ok(SyncResponse::Chain { blocks, end }) => (blocks, end),
            Ok(SyncResponse::Error(e)) => {
                tracing::debug!(%peer, error = %e, "peer could not serve the chain; will retry");
                return Answer::Failed;
            }
            Ok(SyncResponse::Heads(_) | SyncResponse::History { .. }) => return Answer::Lacks,
        };
        if got.is_empty() {
            return if end == ChainEnd::Done {
                // The walk ended before `cid` itself: at our stop or the horizon.
                Answer::Blocks(Vec::new(), None, ChainEnd::Done)
            } else {
                Answer::Lacks
            };
        }
        let mut out = Vec::with_capacity(got.len());
        let mut expect = cid;
        for b in got {
            if !out.is_empty() && self.store.is_linked(&expect).unwrap_or(false) {
                // The walk reached what this node holds: the rest is known here.
                return Answer::Blocks(out, None, ChainEnd::Done);
            }
            let b = b.into_vec();
            let reading = verify_cid(&expect, &b)
                .then(|| Reading::decode(&b).ok())
                .flatten();
            let Some(reading) = reading else {
                self.metrics.bad_blocks.inc();
                self.net.penalize(peer).await;
                // Keep what verified; the rest comes from someone else.
                return Answer::Blocks(out, Some(expect), ChainEnd::Missing);
            };
            self.metrics.catchup_fetched.inc();
            let prev = reading.prev;
            out.push((expect, reading, b));
            match prev {
                Some(p) => expect = p,
                None => return Answer::Blocks(out, None, ChainEnd::Done),
            }
        }
        let more = match end {
            ChainEnd::Done => None,
            ChainEnd::Limit | ChainEnd::Missing => Some(expect),
        };
        Answer::Blocks(out, more, end)
    }
}
