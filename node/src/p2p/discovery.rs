//! Topic discovery: finds the other subscribers of this node's topics without being told
//! their addresses. Every node is a Kademlia server on Kubo's `/ipfs/kad/1.0.0` and provides
//! the key go-libp2p-pubsub's discovery advertises for a topic (`floodsub:TOPIC`, hashed as a
//! raw CIDv1 would be), so Kubo nodes take part; a node short of peers on a topic asks for
//! its providers and dials them, up to its connection budget. Gossipsub's peer exchange on
//! prune (enabled in the behaviour) spreads further peers from there.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use libp2p::kad::{self, store::MemoryStore, GetProvidersOk, QueryId, QueryResult, RecordKey};
use libp2p::multihash::Multihash;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use sha2::{Digest, Sha256};

/// Kubo's DHT protocol.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/kad/1.0.0");
/// How often topics short of peers look for providers again, at first.
pub const DISCOVER_EVERY: Duration = Duration::from_secs(20);
/// Lookups that find nobody new back off up to this (each queries, and so connects to, the
/// peers closest to the key).
const DISCOVER_AT_MOST_EVERY: Duration = Duration::from_secs(300);
/// How often Kademlia walks its routing table after the first walk (Kubo's refresh interval).
pub const WALK_EVERY: Duration = Duration::from_secs(600);
/// Peers whose addresses are remembered for dialing (oldest forgotten first).
const ADDRESS_BOOK: usize = 1024;

/// The DHT key under which a topic's subscribers announce themselves: the SHA2-256 multihash
/// of `floodsub:TOPIC`, as go-libp2p-pubsub's discovery and Kubo's `pubsub --discover` use.
pub fn topic_key(topic: &str) -> RecordKey {
    let digest = Sha256::digest(format!("floodsub:{topic}").as_bytes());
    let mh = Multihash::<64>::wrap(0x12, &digest).expect("a 32-byte digest fits");
    RecordKey::new(&mh.to_bytes())
}

/// The Kademlia behaviour, configured for a cluster: server mode from the start (pods have
/// no confirmed public address, yet must answer their peers' queries).
pub fn kademlia(local: PeerId) -> kad::Behaviour<MemoryStore> {
    let mut config = kad::Config::new(KAD_PROTOCOL);
    config.set_query_timeout(Duration::from_secs(30));
    config.set_periodic_bootstrap_interval(Some(WALK_EVERY));
    let mut kad = kad::Behaviour::with_config(local, MemoryStore::new(local), config);
    kad.set_mode(Some(kad::Mode::Server));
    kad
}

/// Discovery state kept by the swarm task.
pub struct Discovery {
    /// Connections this node dials up to for discovery (the rest of the budget is for
    /// peers that dial in and for bootstrap).
    dial_budget: usize,
    /// Provider lookups in flight, by topic.
    lookups: HashMap<QueryId, (String, bool)>,
    /// Per topic: when the next periodic lookup is due, and the interval after it.
    schedule: HashMap<String, (Instant, Duration)>,
    /// Known addresses of peers (from identify and the DHT).
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    order: VecDeque<PeerId>,
    /// Whether the first routing-table walk has started.
    walked: bool,
}

impl Discovery {
    /// Discovery that dials up to `dial_budget` connected peers.
    pub fn new(dial_budget: usize) -> Self {
        Discovery {
            dial_budget,
            lookups: HashMap::new(),
            schedule: HashMap::new(),
            addrs: HashMap::new(),
            order: VecDeque::new(),
            walked: false,
        }
    }

    /// This node subscribed to `topic`: announce it and look for the others.
    pub fn subscribed(&mut self, kad: &mut kad::Behaviour<MemoryStore>, topic: &str) {
        if let Err(e) = kad.start_providing(topic_key(topic)) {
            tracing::warn!(%topic, error = %e, "cannot announce the topic in the DHT");
        }
        self.look_for(kad, topic);
    }

    /// This node left `topic`.
    pub fn unsubscribed(&mut self, kad: &mut kad::Behaviour<MemoryStore>, topic: &str) {
        kad.stop_providing(&topic_key(topic));
    }

    /// Starts a provider lookup for `topic` unless one is running.
    pub fn look_for(&mut self, kad: &mut kad::Behaviour<MemoryStore>, topic: &str) {
        if self.lookups.values().any(|(t, _)| t == topic) {
            return;
        }
        let id = kad.get_providers(topic_key(topic));
        tracing::debug!(%topic, "looking for the topic's other subscribers in the DHT");
        self.lookups.insert(id, (topic.to_string(), false));
    }

    /// A peer told us its addresses and protocols (identify): DHT servers go into the
    /// routing table, and the first one triggers a walk that finds the rest of the cluster.
    /// Later walks are Kademlia's own (every [`WALK_EVERY`], or while its table is small). A
    /// walk connects to most of a small cluster: walking again whenever a node was short of
    /// peers (as trimming leaves many at once) set off waves of connections that every node
    /// then trimmed again, 30 s apart, and the peer counts never settled.
    pub fn identified(
        &mut self,
        kad: &mut kad::Behaviour<MemoryStore>,
        peer: PeerId,
        protocols: &[StreamProtocol],
        listen: &[Multiaddr],
    ) {
        if !protocols.contains(&KAD_PROTOCOL) {
            return;
        }
        for a in listen {
            kad.add_address(&peer, a.clone());
            self.remember(peer, a.clone());
        }
        if !self.walked && kad.bootstrap().is_ok() {
            tracing::debug!("walking the DHT's routing table");
            self.walked = true;
        }
    }

    /// An address of a peer learnt elsewhere (DHT answers).
    pub fn remember(&mut self, peer: PeerId, addr: Multiaddr) {
        let known = self.addrs.entry(peer).or_insert_with(|| {
            self.order.push_back(peer);
            Vec::new()
        });
        if !known.contains(&addr) && known.len() < 8 {
            known.push(addr);
        }
        while self.order.len() > ADDRESS_BOOK {
            if let Some(old) = self.order.pop_front() {
                self.addrs.remove(&old);
            }
        }
    }

    /// Whether the periodic lookup of `topic` is due (lookups that found nobody new back off).
    pub fn due(&self, topic: &str, now: Instant) -> bool {
        self.schedule.get(topic).is_none_or(|(at, _)| *at <= now)
    }

    /// Sets the next lookup of `topic`: soon if the last one let us dial someone new, later
    /// if not (nobody new, or no room to dial them).
    fn reschedule(&mut self, topic: &str, found_new: bool) {
        let (_, interval) = self
            .schedule
            .get(topic)
            .copied()
            .unwrap_or((Instant::now(), DISCOVER_EVERY));
        let next = if found_new {
            DISCOVER_EVERY
        } else {
            (interval * 2).min(DISCOVER_AT_MOST_EVERY)
        };
        self.schedule
            .insert(topic.to_string(), (Instant::now() + interval, next));
    }

    /// Handles a DHT event; returns the dials to make for providers found. `connected` is the
    /// set of connected peers.
    pub fn kad_event(
        &mut self,
        ev: kad::Event,
        local: PeerId,
        connected: &HashSet<PeerId>,
    ) -> Vec<DialOpts> {
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = ev
        else {
            if let kad::Event::RoutingUpdated {
                peer, addresses, ..
            } = ev
            {
                for a in addresses.iter() {
                    self.remember(peer, a.clone());
                }
            }
            return Vec::new();
        };
        let QueryResult::GetProviders(result) = result else {
            return Vec::new();
        };
        let Some((topic, found_before)) = self.lookups.get(&id).cloned() else {
            return Vec::new();
        };
        let providers = match result {
            Ok(GetProvidersOk::FoundProviders { providers, .. }) => providers,
            Ok(GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => HashSet::new(),
            Err(e) => {
                tracing::debug!(%topic, error = %e, "provider lookup ended");
                HashSet::new()
            }
        };
        let room = self.dial_budget.saturating_sub(connected.len());
        let new: Vec<PeerId> = providers
            .into_iter()
            .filter(|p| *p != local && !connected.contains(p))
            .take(room)
            .collect();
        // In a large cluster there is always a provider we are not connected to: what counts
        // is whether there was room to dial one, else the lookup backs off.
        let found = found_before || !new.is_empty();
        if step.last {
            self.lookups.remove(&id);
            self.reschedule(&topic, found);
        } else if let Some(l) = self.lookups.get_mut(&id) {
            l.1 = found;
        }
        let dials: Vec<DialOpts> = new
            .into_iter()
            .map(|p| {
                tracing::debug!(%topic, peer = %p, "dialing a subscriber found in the DHT");
                DialOpts::peer_id(p)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .addresses(self.addrs.get(&p).cloned().unwrap_or_default())
                    .extend_addresses_through_behaviour()
                    .build()
            })
            .collect();
        dials
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_key_is_the_multihash_go_libp2p_pubsub_provides() {
        // go-libp2p's RoutingDiscovery provides cid.NewCidV1(cid.Raw, sha256("floodsub:" + ns));
        // the DHT keys provider records by that CID's multihash.
        let key = topic_key("temperature");
        let bytes = key.as_ref();
        assert_eq!(&bytes[..2], &[0x12, 0x20]);
        assert_eq!(
            &bytes[2..],
            Sha256::digest(b"floodsub:temperature").as_slice()
        );
        assert_ne!(topic_key("humidity"), key);
    }

    #[test]
    fn providers_are_dialed_within_the_budget_and_never_twice() {
        let local = PeerId::random();
        let mut d = Discovery::new(3);
        let mut kad = kademlia(local);
        d.look_for(&mut kad, "t");
        d.look_for(&mut kad, "t");
        assert_eq!(d.lookups.len(), 1, "one lookup per topic at a time");
        let id = *d.lookups.keys().next().unwrap();
        let known = PeerId::random();
        let connected: HashSet<PeerId> = [known].into_iter().collect();
        let providers: HashSet<PeerId> = (0..5)
            .map(|_| PeerId::random())
            .chain([local, known])
            .collect();
        let ev = kad::Event::OutboundQueryProgressed {
            id,
            result: QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders {
                key: topic_key("t"),
                providers,
            })),
            stats: kad::QueryStats::empty(),
            step: kad::ProgressStep {
                count: std::num::NonZeroUsize::MIN,
                last: true,
            },
        };
        let dials = d.kad_event(ev, local, &connected);
        // Budget 3, one connected: two dials, neither to ourselves nor to the connected peer.
        assert_eq!(dials.len(), 2);
        for dial in &dials {
            let p = dial.get_peer_id().unwrap();
            assert!(p != local && p != known);
        }
        assert!(d.lookups.is_empty(), "the last step ends the lookup");
    }
}
