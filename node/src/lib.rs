//! sensornet: a libp2p gossipsub node for sensor readings with a content-addressed store.
//!
//! Data flows one way: sensor → [`reading`] → [`store`] → [`p2p`] gossip → peers →
//! [`sync`] (validate, store, fill gaps) → [`bus`] → subscribers of the [`api`].
pub mod api;
pub mod bus;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod health;
pub mod identity;
pub mod metrics;
pub mod node;
pub mod p2p;
pub mod reading;
pub mod repo;
pub mod sensor;

pub mod store;
pub mod sync;
