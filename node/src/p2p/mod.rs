//! Networking: the libp2p behaviour, the transports, the swarm task, the catch-up wire
//! protocol and peer discovery. Nothing here knows how readings are validated or stored.
pub mod behaviour;
pub mod bootstrap;
pub mod discovery;
pub mod error;
pub mod protocol;
pub mod swarm;
pub mod transport;
pub mod trim;

pub use error::{DialFailure, NetError};
pub use swarm::{Handle, Inbound, InboundRequest, NetEvent, PeerInfo};
