//! Fetches a source's missing chain by CID from peers, verifying that every block hashes to
//! the CID that asked for it; a peer that lies is penalised and the next one is asked.

use cid::Cid;
use libp2p::PeerId;
use serde_bytes::ByteBuf;

use super::protocol::{ChainEnd, SyncRequest, SyncResponse, MAX_CHAIN_BLOCKS};
use crate::node::Node;
use crate::reading::{verify_cid, Reading};

/// What to fetch.
#[derive(Debug, Clone)]
pub struct Want {
    /// Newest missing block.
    pub target: Cid,
    /// We hold the source up to this seq.
    pub stop_seq: u64,
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
}

/// Walks back from `want.target` until the chain meets what we have, the horizon or the start.
pub async fn fetch_chain(node: &Node, want: Want) -> Fetched {
    let mut blocks: Vec<(Cid, Reading, Vec<u8>)> = Vec::new();
    let mut next = Some(want.target);
    let mut peers = want.peers.clone();
    let mut complete = true;
    'walk: while let Some(cid) = next {
        if node.store.is_linked(&cid).unwrap_or(false) {
            break;
        }
        loop {
            let Some(&peer) = peers.first() else {
                complete = false;
                break 'walk;
            };
            let req = SyncRequest::Chain {
                from: ByteBuf::from(cid.to_bytes()),
                stop_seq: want.stop_seq,
                min_time: want.min_time,
                max: MAX_CHAIN_BLOCKS,
            };
            let resp = match node.net.request(peer, req).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "chain request failed; trying another peer");
                    peers.remove(0);
                    continue;
                }
                Err(_) => {
                    complete = false;
                    break 'walk;
                }
            };
            let SyncResponse::Chain { blocks: got, end } = resp else {
                peers.remove(0);
                continue;
            };
            if got.is_empty() {
                peers.remove(0);
                continue;
            }
            let mut expect = cid;
            let mut last_prev = None;
            for b in got {
                let b = b.into_vec();
                let reading = if verify_cid(&expect, &b) {
                    Reading::decode(&b).ok()
                } else {
                    None
                };
                let Some(reading) = reading else {
                    node.metrics.bad_blocks.inc();
                    node.net.penalize(peer).await;
                    peers.remove(0);
                    continue 'walk;
                };
                node.metrics.catchup_fetched.inc();
                last_prev = reading.prev;
                blocks.push((expect, reading, b));
                match last_prev {
                    Some(p) => expect = p,
                    None => break,
                }
            }
            next = match (end, last_prev) {
                (_, None) => None,
                (ChainEnd::Done, _) => None,
                (ChainEnd::Limit, Some(p)) => Some(p),
                (ChainEnd::Missing, Some(p)) => {
                    // This peer's copy has a hole; ask the others from where it stopped.
                    peers.remove(0);
                    Some(p)
                }
            };
            break;
        }
    }
    Fetched {
        target: want.target,
        blocks,
        complete,
    }
}
