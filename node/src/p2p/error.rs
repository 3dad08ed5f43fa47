//! Typed failures of the network handle, so callers decide by variant, never by message text.

use libp2p::request_response::OutboundFailure;
use libp2p::swarm::DialError;

/// Why a dial failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialFailure {
    /// The address is this node's own (a Service name that lists our own pod).
    #[error("the address is this node's own")]
    LocalPeer,
    /// The peer at the address is not the one its `/p2p/` part names.
    #[error("the peer at that address has another peer id: {0}")]
    WrongPeer(String),
    /// The transport or the handshake failed.
    #[error("{0} (if the peer runs a private network, both sides need the same swarm.key)")]
    Transport(String),
    /// Anything else the swarm refused (no address, denied by a limit, aborted).
    #[error("{0}")]
    Other(String),
}

impl From<&DialError> for DialFailure {
    fn from(e: &DialError) -> Self {
        match e {
            DialError::LocalPeerId { .. } => DialFailure::LocalPeer,
            DialError::WrongPeerId { obtained, .. } => DialFailure::WrongPeer(obtained.to_string()),
            DialError::Transport(_) => DialFailure::Transport(e.to_string()),
            other => DialFailure::Other(other.to_string()),
        }
    }
}

/// A network operation that did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NetError {
    /// The swarm task is gone: the node is shutting down.
    #[error("the network task has stopped (is the node shutting down?)")]
    Stopped,
    /// A dial failed.
    #[error("dial failed: {0}")]
    Dial(#[from] DialFailure),
    /// Gossipsub refused to publish.
    #[error("gossip publish failed: {0}")]
    Publish(String),
    /// A sync request got no answer (timeout, closed connection, unsupported protocol).
    #[error("sync request failed: {0}")]
    Request(String),
}

impl From<&OutboundFailure> for NetError {
    fn from(e: &OutboundFailure) -> Self {
        NetError::Request(e.to_string())
    }
}
