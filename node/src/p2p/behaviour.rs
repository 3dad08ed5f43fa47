//! The composed libp2p behaviour: connection limits, gossipsub, identify, ping, Kademlia
//! (topic discovery), sync and optional mDNS.

use std::time::Duration;

use libp2p::gossipsub::{
    self, AllowAllSubscriptionFilter, IdentityTransform, MaxCountSubscriptionFilter, MessageId,
    PeerScoreParams, PeerScoreThresholds, TopicScoreParams,
};
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{connection_limits, identify, mdns, ping, request_response, StreamProtocol};
use prometheus_client::registry::Registry;

use super::protocol::{SyncRequest, SyncResponse, PROTOCOL};
use super::trim::Limits;
use crate::reading::MAX_BLOCK_SIZE;

/// Identify protocol version, as Kubo announces.
pub const PROTOCOL_VERSION: &str = "ipfs/0.1.0";
/// Agent version in identify and `/api/v0/id`, in Kubo's shape `kubo/VERSION/COMMIT`: the Kubo
/// version whose RPC sensornet implements (clients parse the part after `kubo/` to decide what
/// they may send, e.g. multibase pubsub topics from 0.11 on), then sensornet's own version in the
/// slot where Kubo puts its commit.
pub const AGENT_VERSION: &str = concat!("kubo/0.22.0/sensornet-", env!("CARGO_PKG_VERSION"));
/// Topics a single peer may subscribe to before we refuse its subscriptions (a flood of
/// topics once exhausted Kubo's memory).
pub const MAX_TOPICS_PER_PEER: usize = 128;

/// The gossipsub flavour: signed, with a per-peer topic cap.
pub type Gossipsub =
    gossipsub::Behaviour<IdentityTransform, MaxCountSubscriptionFilter<AllowAllSubscriptionFilter>>;

/// Every protocol the node speaks.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Refuses connections beyond the configured budget (first, so nothing else sees them).
    pub limits: connection_limits::Behaviour,
    /// Publish/subscribe.
    pub gossipsub: Gossipsub,
    /// Exchanges addresses and protocols.
    pub identify: identify::Behaviour,
    /// Keeps connections alive and measures latency.
    pub ping: ping::Behaviour,
    /// Kubo's DHT, used to find the other subscribers of a topic.
    pub kad: kad::Behaviour<MemoryStore>,
    /// Heads and block-chain fetches.
    pub sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
    /// LAN discovery, only when asked for.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

/// go-libp2p-pubsub's default message id: `from ‖ seqno`, so IHAVE/IWANT match in mixed meshes.
pub fn go_message_id(m: &gossipsub::Message) -> MessageId {
    let mut id = m.source.map(|p| p.to_bytes()).unwrap_or_default();
    if let Some(seq) = m.sequence_number {
        id.extend_from_slice(&seq.to_be_bytes());
    }
    MessageId::from(id)
}

/// Score weights for a sensor topic: invalid messages cost much, silence costs nothing
/// (a quiet sensor topic must not get honest peers pruned).
fn topic_score() -> TopicScoreParams {
    TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_cap: 50.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.5,
        ..TopicScoreParams::default()
    }
}

/// Peer scoring sized for a cluster: many pods share a node IP (and tests share 127.0.0.1),
/// so IP colocation is not held against them.
pub fn score_params(topics: &[String]) -> PeerScoreParams {
    let mut params = PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        ..PeerScoreParams::default()
    };
    for t in topics {
        params
            .topics
            .insert(gossipsub::IdentTopic::new(t).hash(), topic_score());
    }
    params
}

/// gossipsub's settings: Strict signing, go-libp2p's message ids, 1 MiB messages.
pub fn gossip_config() -> anyhow::Result<gossipsub::Config> {
    gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(700))
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .message_id_fn(go_message_id)
        // Room for a 1 MiB message plus the envelope (signature, key, topic).
        .max_transmit_size(MAX_BLOCK_SIZE + 4096)
        // gossipsub 0.50 refuses incoming RPCs whose control part passes 16 KiB, yet sends
        // larger ones itself under load (an IHAVE of a heartbeat's message ids: up to 5,000
        // of ~50 bytes). The refusing side drops its read half and the sender's stream then
        // stalls for good: live gossip between the two stopped after a burst. Accept what
        // any peer may send in one RPC.
        .max_control_message_size(MAX_BLOCK_SIZE + 4096)
        .duplicate_cache_time(Duration::from_secs(120))
        // Peer exchange on prune: a pruned peer learns others of the topic to dial.
        .do_px()
        .build()
        .map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))
}

impl Behaviour {
    /// Builds the behaviour; gossipsub metrics go into `registry`.
    pub fn new(
        key: &Keypair,
        topics: &[String],
        use_mdns: bool,
        limits: Limits,
        registry: &mut Registry,
    ) -> anyhow::Result<Behaviour> {
        let config = gossip_config()?;
        let filter = MaxCountSubscriptionFilter {
            filter: AllowAllSubscriptionFilter {},
            max_subscribed_topics: MAX_TOPICS_PER_PEER,
            max_subscriptions_per_request: MAX_TOPICS_PER_PEER,
        };
        let mut gossipsub = Gossipsub::new_with_subscription_filter(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            config,
            filter,
        )
        .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?
        .with_metrics(
            registry.sub_registry_with_prefix("gossipsub"),
            Default::default(),
        );
        gossipsub
            .with_peer_score(score_params(topics), PeerScoreThresholds::default())
            .map_err(|e| anyhow::anyhow!("gossipsub scoring: {e}"))?;

        let identify = identify::Behaviour::new(
            identify::Config::new(PROTOCOL_VERSION.into(), key.public())
                .with_agent_version(AGENT_VERSION.into()),
        );
        let sync = request_response::cbor::Behaviour::new(
            [(
                StreamProtocol::new(PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(30))
                .with_max_concurrent_streams(64),
        );
        let mdns = if use_mdns {
            Some(mdns::tokio::Behaviour::new(
                mdns::Config::default(),
                key.public().to_peer_id(),
            )?)
        } else {
            None
        };
        let connection_limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(limits.hard_cap()))
            .with_max_established_incoming(Some(limits.max_incoming()))
            .with_max_pending_incoming(Some(limits.max_incoming().min(64)))
            // TCP and QUIC to the same peer at once, no more.
            .with_max_established_per_peer(Some(2));
        Ok(Behaviour {
            limits: connection_limits::Behaviour::new(connection_limits),
            kad: super::discovery::kademlia(key.public().to_peer_id()),
            gossipsub,
            identify,
            // A ping every 10 s, 10 s to answer: three missed in a row close the connection
            // (the swarm task) about 50 s after a peer vanished.
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(10)),
            ),
            sync,
            mdns: mdns.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_ihave_gossipsub_sends_fits_in_what_it_accepts() {
        let c = gossip_config().unwrap();
        // go-style ids: a 38-byte Ed25519 peer id ‖ an 8-byte seqno, each framed in 2 bytes;
        // one IHAVE carries at most max_control_messages_sent of them.
        let ihave = c.max_control_messages_sent() * (38 + 8 + 2) + 1024;
        assert!(
            c.max_control_message_size() >= ihave,
            "an IHAVE of {ihave} bytes would be refused (limit {}), stalling the stream",
            c.max_control_message_size()
        );
    }
}
