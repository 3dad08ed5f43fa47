//! The swarm task: owns the libp2p `Swarm`, takes commands from a cloneable [`Handle`] over a
//! bounded channel and hands network events to the node over another.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId, TopicHash};
use libp2p::metrics::{Metrics as Libp2pMetrics, Recorder};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::{dial_opts::DialOpts, ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};

use super::behaviour::{Behaviour, BehaviourEvent};
use super::discovery::{Discovery, DISCOVER_EVERY};
use super::error::{DialFailure, NetError};
use super::protocol::{SyncRequest, SyncResponse};
use super::trim::{self, Limits};

/// Depth of the command and event channels.
const CHANNEL: usize = 8192;
/// Inbound sync requests queued for the server.
const INBOUND_REQUESTS: usize = 512;
/// Pings in a row without an answer after which a connection is closed. libp2p's ping no
/// longer closes it itself, and a peer that vanished without a FIN (power loss, a cut
/// link) otherwise holds a connection, and its mesh slot, until TCP gives up (~15 min).
const PING_FAILURES: u32 = 3;

/// A gossip message handed to the node for validation.
#[derive(Debug)]
pub struct Inbound {
    /// Gossipsub message id (`from ‖ seqno`).
    pub id: MessageId,
    /// The peer that forwarded it to us.
    pub via: PeerId,
    /// The original publisher.
    pub from: Option<PeerId>,
    /// Publisher's sequence number.
    pub seqno: Option<u64>,
    /// Topic string.
    pub topic: String,
    /// Payload.
    pub data: Vec<u8>,
}

/// What the network tells the node.
#[derive(Debug)]
pub enum NetEvent {
    /// A gossip message awaiting validation.
    Message(Inbound),
    /// First connection to a peer.
    Connected(PeerId),
    /// Last connection to a peer closed.
    Disconnected(PeerId),
}

/// A peer asks for heads or blocks. These travel apart from gossip so that a node busy
/// ingesting a flood still answers its peers' catch-up within their request timeout.
pub struct InboundRequest {
    /// Asking peer.
    pub peer: PeerId,
    /// The request.
    pub request: SyncRequest,
    /// Where the answer goes.
    pub channel: ResponseChannel<SyncResponse>,
}

/// A connected peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Peer id.
    pub peer: PeerId,
    /// Address of the (first) connection.
    pub addr: Multiaddr,
    /// Whether we dialed.
    pub outbound: bool,
    /// When the first connection was established.
    pub since: Instant,
}

type Reply<T> = oneshot::Sender<T>;
/// Where a publish's outcome goes.
type Published = Reply<Result<(), NetError>>;

enum Command {
    Publish(String, Vec<u8>, Published),
    PublishReadings(String, Vec<Vec<u8>>),
    Subscribe(String),
    Unsubscribe(String),
    Report(MessageId, PeerId, MessageAcceptance),
    Dial(Multiaddr, Reply<Result<PeerId, NetError>>),
    TopicPeers(Option<String>, Reply<Vec<PeerId>>),
    MeshPeers(String, Reply<usize>),
    Topics(Reply<Vec<String>>),
    Listening(Reply<Vec<Multiaddr>>),
    Score(PeerId, Reply<Option<f64>>),
    Penalize(PeerId),
    Request(PeerId, SyncRequest, Reply<Result<SyncResponse, NetError>>),
    Respond(ResponseChannel<SyncResponse>, SyncResponse),
    Shutdown(Reply<()>),
}

/// Connected peers, kept by the swarm task and read by anyone holding a [`Handle`]: the one
/// list of peers in the node.
type PeerTable = Arc<Mutex<HashMap<PeerId, PeerInfo>>>;

/// Cloneable handle to the swarm task.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    peers: PeerTable,
    /// This node's peer id.
    pub local: PeerId,
}

impl Handle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }
    async fn tell(&self, c: Command) {
        let _ = self.tx.send(c).await;
    }

    /// Publishes on a topic. A topic with no peers yet is not an error: the data is stored and
    /// peers catch up.
    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> Result<(), NetError> {
        self.ask(|r| Command::Publish(topic.to_string(), data, r))
            .await?
    }
    /// Gossips reading blocks of one topic, in order. Readings queued together, by this call
    /// or by concurrent publishers, go out as bundles ([`crate::bundle`]): one signature for
    /// many readings, no added wait. Returns once queued (the queue keeps the order): a
    /// publisher does not wait for the swarm task, and a gossip failure is only logged there
    /// (the readings are stored; peers catch up by CID).
    pub async fn publish_readings(
        &self,
        topic: &str,
        blocks: Vec<Vec<u8>>,
    ) -> Result<(), NetError> {
        self.tx
            .send(Command::PublishReadings(topic.to_string(), blocks))
            .await
            .map_err(|_| NetError::Stopped)
    }
    /// Subscribes to a topic.
    pub async fn subscribe(&self, topic: &str) {
        self.tell(Command::Subscribe(topic.to_string())).await
    }
    /// Unsubscribes from a topic.
    pub async fn unsubscribe(&self, topic: &str) {
        self.tell(Command::Unsubscribe(topic.to_string())).await
    }
    /// Reports a validation verdict back to gossipsub (accept forwards, reject penalises).
    pub async fn report(&self, id: MessageId, via: PeerId, verdict: MessageAcceptance) {
        self.tell(Command::Report(id, via, verdict)).await
    }
    /// Dials an address and waits for the connection; returns the peer reached.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NetError> {
        self.ask(|r| Command::Dial(addr, r)).await?
    }
    /// Connected peers (updated before the node hears of a connection or a loss).
    pub fn peers(&self) -> Vec<PeerInfo> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.values().cloned().collect()
    }
    /// Ids of the connected peers.
    pub fn peer_ids(&self) -> Vec<PeerId> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.keys().copied().collect()
    }
    /// Whether a peer is connected.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.contains_key(peer)
    }
    /// Peers subscribed to a topic (any topic when `None`).
    pub async fn topic_peers(&self, topic: Option<String>) -> Result<Vec<PeerId>, NetError> {
        self.ask(|r| Command::TopicPeers(topic, r)).await
    }
    /// How many peers are in our gossip mesh of a topic (those we forward every message to).
    pub async fn mesh_peers(&self, topic: &str) -> Result<usize, NetError> {
        self.ask(|r| Command::MeshPeers(topic.to_string(), r)).await
    }
    /// Topics we are subscribed to.
    pub async fn topics(&self) -> Result<Vec<String>, NetError> {
        self.ask(Command::Topics).await
    }
    /// Our listen addresses.
    pub async fn listening(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.ask(Command::Listening).await
    }
    /// A peer's gossipsub score.
    pub async fn score(&self, peer: PeerId) -> Result<Option<f64>, NetError> {
        self.ask(|r| Command::Score(peer, r)).await
    }
    /// Blacklists and disconnects a peer that served bad blocks.
    pub async fn penalize(&self, peer: PeerId) {
        self.tell(Command::Penalize(peer)).await
    }
    /// Sends a sync request and waits for the answer.
    pub async fn request(&self, peer: PeerId, req: SyncRequest) -> Result<SyncResponse, NetError> {
        self.ask(|r| Command::Request(peer, req, r)).await?
    }
    /// Answers an inbound sync request.
    pub async fn respond(&self, channel: ResponseChannel<SyncResponse>, resp: SyncResponse) {
        self.tell(Command::Respond(channel, resp)).await
    }
    /// Leaves the mesh: unsubscribes (so peers prune us at once) and closes connections.
    pub async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
    }
}

/// What [`spawn`] hands back: the handle, the network events, peers' sync requests and the
/// task itself (it ends on [`Handle::shutdown`]).
pub struct Spawned {
    /// Cloneable handle.
    pub handle: Handle,
    /// Gossip messages and connection changes, for the sync actor.
    pub events: mpsc::Receiver<NetEvent>,
    /// Peers' sync requests, for the sync server.
    pub requests: mpsc::Receiver<InboundRequest>,
    /// The task, to be awaited or tracked.
    pub task: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

/// Prepares the task on a built swarm; the caller spawns (and tracks) `Spawned::task`.
/// Topic discovery and the trimmer keep the peer count within `limits`.
pub fn spawn(swarm: Swarm<Behaviour>, metrics: Libp2pMetrics, limits: Limits) -> Spawned {
    let (tx, rx) = mpsc::channel(CHANNEL);
    let (ev_tx, ev_rx) = mpsc::channel(CHANNEL);
    let (req_tx, req_rx) = mpsc::channel(INBOUND_REQUESTS);
    let local = *swarm.local_peer_id();
    let peers = PeerTable::default();
    let task = Task {
        swarm,
        metrics,
        events: ev_tx,
        inbound: req_tx,
        peers: peers.clone(),
        dials: HashMap::new(),
        requests: HashMap::new(),
        listen_addrs: Vec::new(),
        discovery: Discovery::new(limits.discovery_budget()),
        limits,
        ping_failures: HashMap::new(),
        trimmed: HashMap::new(),
    };
    Spawned {
        handle: Handle { tx, peers, local },
        events: ev_rx,
        requests: req_rx,
        task: Box::pin(task.run(rx)),
    }
}

/// Most readings folded from queued commands before they are published.
const MAX_FOLDED: usize = 4 * crate::bundle::MAX_READINGS;

/// Readings to gossip, gathered from queued commands: per topic, in arrival order.
#[derive(Default)]
struct Outgoing {
    topics: Vec<(String, Vec<Vec<u8>>)>,
    readings: usize,
}

impl Outgoing {
    fn add(&mut self, topic: String, blocks: Vec<Vec<u8>>) {
        self.readings += blocks.len();
        match self.topics.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, queued)) => queued.extend(blocks),
            None => self.topics.push((topic, blocks)),
        }
    }
}

struct Task {
    swarm: Swarm<Behaviour>,
    metrics: Libp2pMetrics,
    events: mpsc::Sender<NetEvent>,
    inbound: mpsc::Sender<InboundRequest>,
    peers: PeerTable,
    dials: HashMap<ConnectionId, Reply<Result<PeerId, NetError>>>,
    requests: HashMap<OutboundRequestId, Reply<Result<SyncResponse, NetError>>>,
    listen_addrs: Vec<Multiaddr>,
    discovery: Discovery,
    limits: Limits,
    /// Unanswered pings in a row, per connection.
    ping_failures: HashMap<ConnectionId, u32>,
    /// Peers the trimmer closed, and when (forgotten after [`trim::RETURN_MEMORY`]).
    trimmed: HashMap<PeerId, Instant>,
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut discover = tokio::time::interval(DISCOVER_EVERY);
        discover.tick().await;
        let mut trim = tokio::time::interval(trim::TRIM_EVERY);
        trim.tick().await;
        loop {
            tokio::select! {
                _ = discover.tick() => self.discover(),
                _ = trim.tick() => self.trim(),
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    if !self.commands(cmd, &mut commands) {
                        return;
                    }
                }
                event = self.swarm.select_next_some() => self.event(event),
            }
        }
    }

    /// Runs `first` and, while they are readings to gossip, the commands queued behind it:
    /// those readings are folded into bundles. False once the task is to stop.
    fn commands(&mut self, first: Command, queue: &mut mpsc::Receiver<Command>) -> bool {
        let mut outgoing = Outgoing::default();
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Command::PublishReadings(topic, blocks) => {
                    outgoing.add(topic, blocks);
                    if outgoing.readings < MAX_FOLDED {
                        next = queue.try_recv().ok();
                    }
                }
                Command::Shutdown(reply) => {
                    self.gossip_readings(std::mem::take(&mut outgoing));
                    self.leave();
                    let _ = reply.send(());
                    return false;
                }
                cmd => {
                    self.gossip_readings(std::mem::take(&mut outgoing));
                    self.command(cmd);
                }
            }
        }
        self.gossip_readings(outgoing);
        true
    }

    /// Publishes folded readings, per topic in their order.
    fn gossip_readings(&mut self, outgoing: Outgoing) {
        for (topic, blocks) in outgoing.topics {
            for payload in crate::bundle::pack(blocks) {
                if let Err(e) = self.gossip(&topic, payload) {
                    tracing::warn!(%topic, error = %e, "gossip publish failed; peers will catch up by CID");
                }
            }
        }
    }

    /// One gossipsub publish; no subscribed peer yet is not an error (they catch up by CID).
    fn gossip(&mut self, topic: &str, data: Vec<u8>) -> Result<(), NetError> {
        let b = self.swarm.behaviour_mut();
        match b.gossipsub.publish(IdentTopic::new(topic), data) {
            Ok(_) | Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Ok(()),
            Err(gossipsub::PublishError::Duplicate) => Ok(()),
            Err(e) => Err(NetError::Publish(e.to_string())),
        }
    }

    /// Looks for more subscribers of every topic that has fewer than
    /// [`Limits::topic_peers_wanted`].
    fn discover(&mut self) {
        let wanted = self.limits.topic_peers_wanted();
        let b = self.swarm.behaviour_mut();
        let topics: Vec<TopicHash> = b.gossipsub.topics().cloned().collect();
        let now = Instant::now();
        for t in topics {
            if !self.discovery.due(t.as_str(), now) {
                continue;
            }
            let peers = b
                .gossipsub
                .all_peers()
                .filter(|(_, ts)| ts.contains(&&t))
                .count();
            if peers < wanted {
                self.discovery.look_for(&mut b.kad, t.as_str());
            }
        }
    }

    /// Closes the least useful connections once more peers are connected than the budget.
    fn trim(&mut self) {
        let mesh: HashSet<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_mesh_peers()
            .copied()
            .collect();
        let now = Instant::now();
        self.trimmed
            .retain(|_, at| now.saturating_duration_since(*at) < trim::RETURN_MEMORY);
        let candidates: Vec<trim::Candidate> = self
            .peer_table()
            .values()
            .map(|p| trim::Candidate {
                peer: p.peer,
                since: p.since,
                outbound: p.outbound,
                in_mesh: mesh.contains(&p.peer),
                returning: self.trimmed.contains_key(&p.peer),
            })
            .collect();
        let gone = trim::choose(&candidates, self.limits, now);
        if !gone.is_empty() {
            tracing::info!(
                peers = candidates.len(),
                closing = gone.len(),
                budget = self.limits.max_connections,
                "over the connection budget; closing the least useful connections"
            );
        }
        for p in gone {
            self.trimmed.insert(p, now);
            let _ = self.swarm.disconnect_peer_id(p);
        }
    }

    fn peer_table(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, PeerInfo>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn leave(&mut self) {
        let topics: Vec<TopicHash> = self.swarm.behaviour().gossipsub.topics().cloned().collect();
        for t in topics {
            // Unsubscribing sends the peers an explicit leave before the connections close.
            let _ = self
                .swarm
                .behaviour_mut()
                .gossipsub
                .unsubscribe(&IdentTopic::new(t.as_str()));
        }
        let peers: Vec<PeerId> = self.peer_table().keys().copied().collect();
        for p in peers {
            let _ = self.swarm.disconnect_peer_id(p);
        }
    }

    fn command(&mut self, cmd: Command) {
        let b = self.swarm.behaviour_mut();
        match cmd {
            Command::Publish(topic, data, reply) => {
                let _ = reply.send(self.gossip(&topic, data));
            }
            Command::PublishReadings(topic, blocks) => {
                let mut outgoing = Outgoing::default();
                outgoing.add(topic, blocks);
                self.gossip_readings(outgoing);
            }
            Command::Subscribe(topic) => match b.gossipsub.subscribe(&IdentTopic::new(&topic)) {
                Ok(true) => self.discovery.subscribed(&mut b.kad, &topic),
                Ok(false) => {}
                Err(e) => tracing::warn!(%topic, error = %e, "subscribe failed"),
            },
            Command::Unsubscribe(topic) => {
                if b.gossipsub.unsubscribe(&IdentTopic::new(&topic)) {
                    self.discovery.unsubscribed(&mut b.kad, &topic);
                }
            }
            Command::Report(id, via, verdict) => {
                b.gossipsub
                    .report_message_validation_result(&id, &via, verdict);
            }
            Command::Dial(addr, reply) => {
                let opts = DialOpts::unknown_peer_id().address(addr).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dials.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(DialFailure::from(&e).into()));
                    }
                }
            }
            Command::MeshPeers(topic, reply) => {
                let hash = IdentTopic::new(topic).hash();
                let _ = reply.send(b.gossipsub.mesh_peers(&hash).count());
            }
            Command::TopicPeers(topic, reply) => {
                let hash = topic.map(|t| IdentTopic::new(t).hash());
                let peers = b
                    .gossipsub
                    .all_peers()
                    .filter(|(_, ts)| hash.as_ref().is_none_or(|h| ts.contains(&h)))
                    .map(|(p, _)| *p)
                    .collect();
                let _ = reply.send(peers);
            }
            Command::Topics(reply) => {
                let _ = reply.send(b.gossipsub.topics().map(|t| t.to_string()).collect());
            }
            Command::Listening(reply) => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::Score(peer, reply) => {
                let _ = reply.send(b.gossipsub.peer_score(&peer));
            }
            Command::Penalize(peer) => {
                tracing::warn!(%peer, "peer sent blocks that do not hash to their CID; disconnecting it");
                b.gossipsub.blacklist_peer(&peer);
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Request(peer, req, reply) => {
                // request-response would dial a peer that is gone, and a peer the trimmer just
                // closed would come straight back: only bootstrap and discovery choose whom
                // to connect to.
                if !self.swarm.is_connected(&peer) {
                    let _ = reply.send(Err(NetError::Request(
                        "the peer is not connected (sync requests never dial)".into(),
                    )));
                    return;
                }
                let id = self.swarm.behaviour_mut().sync.send_request(&peer, req);
                self.requests.insert(id, reply);
            }
            Command::Respond(channel, resp) => {
                let _ = b.sync.send_response(channel, resp);
            }
            Command::Shutdown(_) => unreachable!("handled in run"),
        }
    }

    fn emit(&self, ev: NetEvent) {
        if let Err(mpsc::error::TrySendError::Full(ev)) = self.events.try_send(ev) {
            // Dropped messages are not lost: heads exchange and gap filling fetch them later.
            tracing::warn!(event = ?std::mem::discriminant(&ev), "node busy; dropped a network event");
        }
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.metrics.record(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::debug!(%address, "swarm listening");
                self.listen_addrs.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                connection_id,
                num_established,
                ..
            } => {
                // The node hears of the peer before the dialer does (readiness counts on it).
                let reply = self.dials.remove(&connection_id);
                if num_established.get() == 1 {
                    tracing::info!(peer = %peer_id, addr = %endpoint.get_remote_address(), dialed = endpoint.is_dialer(), "peer joined");
                    self.peer_table().insert(
                        peer_id,
                        PeerInfo {
                            peer: peer_id,
                            addr: endpoint.get_remote_address().clone(),
                            outbound: endpoint.is_dialer(),
                            since: Instant::now(),
                        },
                    );
                    self.emit(NetEvent::Connected(peer_id));
                }
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.ping_failures.remove(&connection_id);
                if num_established == 0 {
                    tracing::info!(peer = %peer_id, "peer left");
                    self.peer_table().remove(&peer_id);
                    self.emit(NetEvent::Disconnected(peer_id));
                }
            }
            SwarmEvent::NewExternalAddrOfPeer { peer_id, address } => {
                self.discovery.remember(peer_id, address);
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                peer_id,
            } => {
                let failure = DialFailure::from(&error);
                tracing::debug!(peer = ?peer_id, error = %failure, "dial failed");
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(failure.into()));
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                // A handshake that fails this early is most often a swarm.key mismatch.
                tracing::warn!(from = %send_back_addr, %error, "refused an incoming connection (if the peer runs a private network, both sides need the same swarm.key)");
            }
            SwarmEvent::Behaviour(ev) => self.behaviour_event(ev),
            _ => {}
        }
    }

    fn behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Gossipsub(ev) => {
                self.metrics.record(&ev);
                match ev {
                    gossipsub::Event::Message {
                        propagation_source,
                        message_id,
                        message,
                    } => self.emit(NetEvent::Message(Inbound {
                        id: message_id,
                        via: propagation_source,
                        from: message.source,
                        seqno: message.sequence_number,
                        topic: message.topic.into_string(),
                        data: message.data,
                    })),
                    gossipsub::Event::Subscribed { peer_id, topic, .. } => {
                        tracing::debug!(peer = %peer_id, %topic, "peer subscribed");
                    }
                    gossipsub::Event::SlowPeer { peer_id, .. } => {
                        tracing::warn!(peer = %peer_id, "peer is slow; gossipsub dropped messages to it");
                    }
                    _ => {}
                }
            }
            BehaviourEvent::Identify(ev) => {
                self.metrics.record(&ev);
                if let libp2p::identify::Event::Received { peer_id, info, .. } = ev {
                    tracing::debug!(peer = %peer_id, agent = %info.agent_version, "identified");
                    let kad = &mut self.swarm.behaviour_mut().kad;
                    self.discovery
                        .identified(kad, peer_id, &info.protocols, &info.listen_addrs);
                }
            }
            BehaviourEvent::Kad(ev) => {
                self.metrics.record(&ev);
                let connected: HashSet<PeerId> = self.peer_table().keys().copied().collect();
                let local = *self.swarm.local_peer_id();
                for dial in self.discovery.kad_event(ev, local, &connected) {
                    let _ = self.swarm.dial(dial);
                }
            }
            BehaviourEvent::Ping(ev) => {
                self.metrics.record(&ev);
                self.ping(ev);
            }
            BehaviourEvent::Limits(never) => match never {},
            BehaviourEvent::Sync(ev) => self.sync_event(ev),
            BehaviourEvent::Mdns(libp2p::mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    if !self.peer_table().contains_key(&peer) {
                        let _ = self.swarm.dial(addr);
                    }
                }
            }
            BehaviourEvent::Mdns(_) => {}
        }
    }

    /// Closes a connection whose peer stopped answering pings.
    fn ping(&mut self, ev: libp2p::ping::Event) {
        match ev.result {
            Ok(_) => {
                self.ping_failures.remove(&ev.connection);
            }
            Err(e) => {
                let n = self.ping_failures.entry(ev.connection).or_default();
                *n += 1;
                if *n >= PING_FAILURES {
                    tracing::warn!(peer = %ev.peer, error = %e, failures = *n, "peer stopped answering pings; closing the connection");
                    self.ping_failures.remove(&ev.connection);
                    self.swarm.close_connection(ev.connection);
                }
            }
        }
    }

    fn sync_event(&mut self, ev: request_response::Event<SyncRequest, SyncResponse>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let r = InboundRequest {
                        peer,
                        request,
                        channel,
                    };
                    if self.inbound.try_send(r).is_err() {
                        // The asker times out and retries, or asks another peer.
                        tracing::warn!(%peer, "too many sync requests queued; dropped one");
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.requests.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.requests.remove(&request_id) {
                    let _ = reply.send(Err(NetError::from(&error)));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "sync request from peer failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}
