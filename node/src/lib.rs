//! sensornet: a libp2p gossipsub node for sensor readings with a content-addressed store.
//!
//! Dependencies run the way data flows: sensor → [`reading`] → [`store`] → [`p2p`] gossip
//! (several readings in one message under load: [`bundle`]) →
//! peers → [`sync`] (validate, store, fill gaps) → [`bus`] → subscribers of the [`api`];
//! readings published here go through [`publish`]. [`daemon`] assembles the parts and gives
//! each only what it uses; [`cli`] is the thin edge.
pub mod api;
pub mod bundle;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod health;
pub mod history;
pub mod identity;
pub mod metrics;
pub mod mqtt;
pub mod p2p;
pub mod publish;
pub mod reading;
pub mod repo;
pub mod retention;
pub mod sensor;
pub mod store;
pub mod sync;
pub mod tasks;
