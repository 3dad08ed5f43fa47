//! The MQTT listener every node runs (3.1.1 and 5.0): `sensornet/<topic>/<source>` PUBLISHes
//! become readings through the same [`Publisher`] as `reading/pub` (a QoS 1 PUBACK means
//! durable on this node), SUBSCRIBEs follow the [`Bus`] as `reading/sub` does, and the store
//! serves retained messages and what persistent sessions missed. See docs/mqtt.md.

pub mod codec;
pub mod connection;
pub mod handshake;
pub mod history;
pub mod listener;
pub mod session;
pub mod topics;

use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::store::Store;

pub use listener::{bind, run};
pub use session::Sessions;

/// Most QoS 0/1 reading PUBLISHes of one connection committed together (one fsync, then
/// their PUBACKs in order); also the Receive Maximum a 5.0 client is told.
pub const MAX_PIPELINE: usize = 256;

/// Bounds that keep one client from taking the node's memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest packet accepted (bytes after the fixed header); larger ones close the
    /// connection (5.0: reason 0x95).
    pub max_packet: usize,
    /// Subscriptions one client may hold; more are refused in SUBACK.
    pub max_subscriptions: usize,
    /// Connections at once; more are closed at accept.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet: 256 * 1024,
            max_subscriptions: 32,
            max_connections: 1024,
        }
    }
}

/// What every connection uses.
pub struct Shared {
    /// The publish path of `reading/pub`.
    pub publisher: Publisher,
    /// Local delivery.
    pub bus: Bus,
    /// Heads (retained) and history (sessions).
    pub store: Store,
    /// The registry's MQTT metrics.
    pub metrics: Metrics,
    /// Persistent sessions.
    pub sessions: Sessions,
    /// The API token, required as the password when set.
    pub token: Option<String>,
    /// Topics this node keeps (a wildcard topic level covers them).
    pub topics: Vec<String>,
    /// Cancelled when the node stops.
    pub stopping: CancellationToken,
    /// Bounds.
    pub limits: Limits,
}
