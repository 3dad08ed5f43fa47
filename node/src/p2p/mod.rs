//! Networking: the libp2p behaviour, the transports, the swarm task and peer discovery.
pub mod behaviour;
pub mod discovery;
pub mod swarm;
pub mod transport;

pub use swarm::{Handle, Inbound, InboundRequest, NetEvent, PeerInfo};
