//! The `/sensornet/sync/1` request-response messages: heads of sources, and chain walks.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Protocol name on the wire.
pub const PROTOCOL: &str = "/sensornet/sync/1";
/// Most blocks in one chain answer (~200 KB of readings).
pub const MAX_CHAIN_BLOCKS: u32 = 2000;

/// A request to a peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SyncRequest {
    /// The head of every source on these topics.
    Heads {
        /// Topics asked about.
        topics: Vec<String>,
    },
    /// Blocks from `from` back through `prev`, newest first.
    Chain {
        /// CID bytes of the newest block wanted.
        from: ByteBuf,
        /// Stop before readings with `seq <= stop_seq` (the asker has those).
        stop_seq: u64,
        /// Stop before readings older than this (unix ms): the asker's retention horizon.
        min_time: u64,
        /// Most blocks to send.
        max: u32,
    },
}

/// One source's head, as sent on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireHead {
    /// Topic.
    pub topic: String,
    /// Source id.
    pub source: String,
    /// Head sequence number.
    pub seq: u64,
    /// Head CID bytes.
    pub cid: ByteBuf,
}

/// Why a chain answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChainEnd {
    /// The walk reached `stop_seq`, the horizon or the first reading.
    Done,
    /// `max` blocks were sent; ask again from the last one's `prev`.
    Limit,
    /// The responder lacks the next block; ask someone else.
    Missing,
}

/// A peer's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SyncResponse {
    /// Heads of the asked topics.
    Heads(Vec<WireHead>),
    /// Blocks newest first, and why they end.
    Chain {
        /// Block bytes.
        blocks: Vec<ByteBuf>,
        /// Why the walk stopped.
        end: ChainEnd,
    },
    /// The request could not be served.
    Error(String),
}
