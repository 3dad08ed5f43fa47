//! The `/sensornet/sync/1` request-response messages: heads of sources, chain walks, and
//! history by time range (for a node that lacks a topic or a range).

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Protocol name on the wire.
pub const PROTOCOL: &str = "/sensornet/sync/1";
/// Most blocks in one chain answer (~200 KB of readings).
pub const MAX_CHAIN_BLOCKS: u32 = 2000;
/// Most readings in one history answer (~200 KB); the asker pages on with `after`.
pub const MAX_HISTORY_BLOCKS: u32 = 2000;

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
    /// Readings of a topic with `since <= time < until`, in (time, CID) order.
    History {
        /// Canonical topic.
        topic: String,
        /// First time included (unix ms).
        since: u64,
        /// First time excluded (unix ms).
        until: u64,
        /// Only this source.
        source: Option<String>,
        /// (time, CID bytes) of the last reading of the previous page.
        after: Option<(u64, ByteBuf)>,
        /// Most blocks to send (at most [`MAX_HISTORY_BLOCKS`]).
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
    /// History blocks in (time, CID) order, and where the next page starts (`None`: done).
    History {
        /// Block bytes.
        blocks: Vec<ByteBuf>,
        /// The `after` of the next request, when there is more.
        next: Option<(u64, ByteBuf)>,
    },
    /// The request could not be served.
    Error(String),
}
