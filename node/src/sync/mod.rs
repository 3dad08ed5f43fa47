//! Ingest and catch-up: the actor that takes gossip (and blocks published here through
//! `pubsub/pub`), has each message judged ([`validate`]), stores readings in groups, hands
//! linked ones to the [`Bus`] in per-source order, parks the others in the waiting
//! [`graph`] while their chain is fetched by CID ([`fetch`]), exchanges heads with peers and
//! tells when the node is ready ([`readiness`]). Peers' requests are answered by [`serve`].

pub mod fetch;
pub mod graph;
pub mod readiness;
pub mod repair;
pub mod replay;
pub mod serve;
pub mod validate;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use libp2p::gossipsub::MessageAcceptance;
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::bus::{Bus, Linked};
use crate::clock::now_ms;
use crate::config::RetentionPolicy;
use crate::metrics::Metrics;
use crate::p2p::protocol::{SyncRequest, SyncResponse, WireHead};
use crate::p2p::{Handle, NetError, NetEvent};
use crate::reading::{cid_of, Reading, DAG_CBOR};
use crate::store::{Batch, Hole, Store, StoreError};
use fetch::{Fetched, Fetcher, Want};
use graph::Graph;
use readiness::Readiness;
use validate::Verdict;

/// Most gossip messages folded into one store transaction.
const MAX_INGEST_BATCH: usize = 1024;
/// Chain fetches running at once.
const MAX_FETCHES: usize = 8;
/// How often heads are compared with every peer (heals partitions for quiet sources).
const HEADS_EVERY: Duration = Duration::from_secs(15);
/// Delay before a failed heads exchange of the initial catch-up is retried.
const HEADS_RETRY: Duration = Duration::from_millis(500);

/// What the sync actor needs, and nothing more.
#[derive(Clone)]
pub struct SyncDeps {
    /// The block store.
    pub store: Store,
    /// The network.
    pub net: Handle,
    /// Local delivery.
    pub bus: Bus,
    /// Metrics.
    pub metrics: Metrics,
    /// Topics whose heads are exchanged.
    pub topics: Vec<String>,
    /// Retention (its horizon bounds catch-up).
    pub retention: RetentionPolicy,
}

/// A reading block published on this node (`pubsub/pub` of DAG-CBOR bytes): it takes the
/// same path as gossip, so one place decides whether it is linked or waits.
struct LocalBlock {
    reading: Reading,
    data: Vec<u8>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Hands locally published reading blocks to the actor.
#[derive(Clone)]
pub struct LocalIngest(mpsc::Sender<LocalBlock>);

/// The receiving end of [`LocalIngest`], for [`run`].
pub struct LocalBlocks(mpsc::Receiver<LocalBlock>);

/// A pair of [`LocalIngest`] and the [`LocalBlocks`] the actor reads.
pub fn local_channel() -> (LocalIngest, LocalBlocks) {
    let (tx, rx) = mpsc::channel(256);
    (LocalIngest(tx), LocalBlocks(rx))
}

/// Why a local block was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The store refused the block.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The actor is gone.
    #[error("the sync task has stopped; the node is shutting down")]
    Stopped,
}

impl LocalIngest {
    /// Stores a reading block and links it (or parks it while its chain is fetched);
    /// returns once it is durable.
    pub async fn ingest(&self, reading: Reading, data: Vec<u8>) -> Result<(), IngestError> {
        let (done, rx) = oneshot::channel();
        self.0
            .send(LocalBlock {
                reading,
                data,
                done,
            })
            .await
            .map_err(|_| IngestError::Stopped)?;
        Ok(rx.await.map_err(|_| IngestError::Stopped)??)
    }
}

/// One block on its way in: a gossip message or a local block.
struct Incoming {
    item: Linked,
    via: Option<PeerId>,
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

enum Internal {
    Heads(PeerId, Result<Vec<WireHead>, NetError>),
    Fetched(Fetched),
}

/// The ingest/catch-up actor.
struct Sync {
    deps: SyncDeps,
    fetcher: Fetcher,
    internal_tx: mpsc::Sender<Internal>,
    graph: Graph,
    fetch_slots: Arc<Semaphore>,
    readiness: Readiness,
    ready: watch::Sender<bool>,
    replay: replay::ReplayGuard,
    /// Fetches started by the repair sweep.
    repairs: HashSet<Cid>,
    /// Verdicts on gossip messages, told to gossipsub once the group they came in is
    /// delivered here (the report lets gossipsub forward a message to other peers; it is
    /// not on the way to this node's own subscribers).
    reports: Vec<(libp2p::gossipsub::MessageId, PeerId, MessageAcceptance)>,
}

/// Runs the actor until the network events end.
pub async fn run(
    deps: SyncDeps,
    mut events: mpsc::Receiver<NetEvent>,
    LocalBlocks(mut local): LocalBlocks,
    mut bootstrap_done: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
) {
    let (internal_tx, mut internal_rx) = mpsc::channel(256);
    let mut me = Sync {
        fetcher: Fetcher {
            net: deps.net.clone(),
            store: deps.store.clone(),
            metrics: deps.metrics.clone(),
        },
        deps,
        internal_tx,
        graph: Graph::default(),
        fetch_slots: Arc::new(Semaphore::new(MAX_FETCHES)),
        readiness: Readiness::default(),
        ready,
        replay: replay::ReplayGuard::default(),
        repairs: HashSet::new(),
        reports: Vec::new(),
    };
    me.resume_pending();
    let mut heads_tick = tokio::time::interval(HEADS_EVERY);
    heads_tick.tick().await;
    let mut repair_tick = tokio::time::interval(repair::REPAIR_EVERY);
    repair_tick.tick().await;
    me.update_hole_gauge();
    let mut bootstrap_seen = false;
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { return };
                let mut batch = Vec::new();
                me.event(ev, &mut batch).await;
                while batch.len() < MAX_INGEST_BATCH {
                    match events.try_recv() {
                        Ok(ev) => me.event(ev, &mut batch).await,
                        Err(_) => break,
                    }
                }
                me.ingest(batch).await;
                me.send_reports().await;
            }
            Some(block) = local.recv() => {
                let data = Arc::new(block.data);
                let item = Linked {
                    cid: cid_of(DAG_CBOR, &data),
                    reading: block.reading,
                    backfilled: false,
                    from: Some(me.deps.net.local),
                    seqno: None,
                    data,
                };
                me.ingest(vec![Incoming { item, via: None, done: Some(block.done) }]).await;
            }
            Some(msg) = internal_rx.recv() => me.internal(msg).await,
            changed = bootstrap_done.changed(), if !bootstrap_seen => {
                if changed.is_err() || *bootstrap_done.borrow() {
                    bootstrap_seen = true;
                    // The swarm's own list: a Connected event may still be queued, and its
                    // peer must count for the initial catch-up.
                    let peers = me.deps.net.peer_ids();
                    for p in &peers {
                        me.ask_heads(*p);
                    }
                    me.readiness.bootstrapped(peers);
                }
            }
            _ = heads_tick.tick() => {
                for p in me.deps.net.peer_ids() {
                    me.ask_heads(p);
                }
            }
            _ = repair_tick.tick() => me.sweep_holes(None).await,
        }
        if me.readiness.poll() {
            tracing::info!("catch-up finished; node is ready");
            me.deps.metrics.ready.set(1);
            let _ = me.ready.send(true);
        }
        me.deps.metrics.catchup_lag.set(me.graph.lag() as i64);
    }
}

impl Sync {
    /// Readings left unlinked by a previous run resume their fetch.
    fn resume_pending(&mut self) {
        let Ok(pending) = self.deps.store.pending() else {
            return;
        };
        for p in pending {
            let data = self
                .deps
                .store
                .get(&p.cid)
                .ok()
                .flatten()
                .unwrap_or_default();
            let horizon = self.horizon(&p.reading.topic);
            let missing = graph::missing_parents(&p.reading, horizon, |c| self.is_linked(c));
            self.graph.wait(
                Linked {
                    cid: p.cid,
                    reading: p.reading,
                    backfilled: true,
                    from: None,
                    seqno: None,
                    data: Arc::new(data),
                },
                missing,
            );
        }
    }

    async fn event(&mut self, ev: NetEvent, batch: &mut Vec<Incoming>) {
        match ev {
            NetEvent::Message(m) => {
                let replayed = match (m.from, m.seqno) {
                    (Some(from), Some(seqno)) => {
                        self.replay.check(from, seqno) != replay::Seen::Fresh
                    }
                    _ => false,
                };
                let topic = crate::reading::canonical_topic(&m.topic).to_string();
                let verdict = validate::validate(&topic, &m.data, replayed);
                let acceptance = match &verdict {
                    Verdict::Reject(reason) => {
                        tracing::warn!(peer = %m.via, from = ?m.from, %topic, reason, "rejected a bad message from a peer");
                        self.deps.metrics.reject(&topic, reason);
                        MessageAcceptance::Reject
                    }
                    _ => MessageAcceptance::Accept,
                };
                self.reports.push((m.id.clone(), m.via, acceptance));
                // A bundle's readings go on as if each had come alone (with the bundle's
                // seqno: the gossip message they came in).
                let gossiped = |reading: Reading, data: Arc<Vec<u8>>| Incoming {
                    item: Linked {
                        cid: cid_of(DAG_CBOR, &data),
                        reading,
                        backfilled: false,
                        from: m.from,
                        seqno: m.seqno,
                        data,
                    },
                    via: Some(m.via),
                    done: None,
                };
                let data = Arc::new(m.data);
                match verdict {
                    Verdict::Reading(reading) => batch.push(gossiped(*reading, data)),
                    Verdict::Bundle(readings) => batch.extend(
                        readings
                            .into_iter()
                            .map(|(reading, block)| gossiped(reading, Arc::new(block))),
                    ),
                    Verdict::Raw => self.deps.bus.deliver_raw(&topic, m.from, m.seqno, data),
                    Verdict::Reject(_) => {}
                }
            }
            NetEvent::Connected(p) => {
                self.deps
                    .metrics
                    .peers
                    .set(self.deps.net.peers().len() as i64);
                self.ask_heads(p);
                self.refetch_orphans(p);
                self.sweep_holes(Some(p)).await;
            }
            NetEvent::Disconnected(p) => {
                self.deps
                    .metrics
                    .peers
                    .set(self.deps.net.peers().len() as i64);
                self.readiness.left(&p);
            }
        }
    }

    fn is_linked(&self, cid: &Cid) -> bool {
        self.deps.store.is_linked(cid).unwrap_or(false)
    }

    fn horizon(&self, topic: &str) -> u64 {
        self.deps.retention.horizon(topic, now_ms())
    }

    /// Stores a group of readings in one transaction, then delivers those whose chain is
    /// complete and starts fetches for the others.
    async fn ingest(&mut self, batch: Vec<Incoming>) {
        if batch.is_empty() {
            return;
        }
        let mut out = Batch::default();
        let mut deliver: Vec<Linked> = Vec::new();
        let mut linked_now: HashSet<Cid> = HashSet::new();
        let mut fetch: Vec<(Cid, Reading, Option<PeerId>)> = Vec::new();
        let mut acks = Vec::new();
        for Incoming { item, via, done } in batch {
            acks.extend(done);
            if via.is_some() {
                self.deps
                    .metrics
                    .received
                    .get_or_create(&Metrics::topic(&item.reading.topic))
                    .inc();
            }
            let cid = item.cid;
            if linked_now.contains(&cid) || self.graph.is_pending(&cid) || self.is_linked(&cid) {
                continue;
            }
            out.blocks.push((cid, item.data.to_vec()));
            let horizon = self.horizon(&item.reading.topic);
            let missing = graph::missing_parents(&item.reading, horizon, |p| {
                linked_now.contains(p) || self.is_linked(p)
            });
            if missing.is_empty() {
                self.link(item, &mut out, &mut deliver, &mut linked_now);
            } else {
                out.pending.push(cid);
                let child = item.reading.clone();
                for parent in self.graph.wait(item, missing) {
                    fetch.push((parent, child.clone(), via));
                }
            }
        }
        // Subscribers get gossip before this node's own commit: the publisher acknowledged
        // the reading only once it was durable there, so a crash here loses nothing (catch-up
        // refetches it), and the delay is one fsync shorter.
        for l in deliver {
            self.deps.bus.deliver(l);
        }
        self.send_reports().await;
        let written = self.deps.store.write(out).await;
        for done in acks {
            let _ = done.send(written.clone());
        }
        if let Err(e) = written {
            tracing::error!(error = %e, "could not store received readings; peers will resend them on catch-up");
            return;
        }
        for (parent, child, via) in fetch {
            let expected = self.expected_below(&child);
            self.start_fetch(parent, &child.topic, expected, via);
        }
    }

    /// Tells gossipsub the verdicts gathered since the last call.
    async fn send_reports(&mut self) {
        for (id, via, acceptance) in std::mem::take(&mut self.reports) {
            self.deps.net.report(id, via, acceptance).await;
        }
    }

    /// Roughly how many readings are missing below `child`: down to this node's highest head
    /// of the source (sizes the first chain request).
    fn expected_below(&self, child: &Reading) -> u64 {
        child
            .seq
            .saturating_sub(self.head_seq(&child.topic, &child.source) + 1)
            .max(1)
    }

    /// The highest seq of a source held here (0 for none).
    fn head_seq(&self, topic: &str, source: &str) -> u64 {
        self.deps
            .store
            .head(topic, source)
            .ok()
            .flatten()
            .map_or(0, |h| h.seq)
    }

    /// Marks a reading linked and, transitively, every reading that was waiting for it.
    fn link(
        &mut self,
        item: Linked,
        out: &mut Batch,
        deliver: &mut Vec<Linked>,
        linked_now: &mut HashSet<Cid>,
    ) {
        for l in self.graph.link(item) {
            self.record_linked(l, out, deliver, linked_now);
        }
    }

    fn record_linked(
        &mut self,
        l: Linked,
        out: &mut Batch,
        deliver: &mut Vec<Linked>,
        linked_now: &mut HashSet<Cid>,
    ) {
        self.readiness.settled(&l.cid);
        linked_now.insert(l.cid);
        out.linked
            .push((l.cid, l.reading.clone(), l.data.len() as u64));
        deliver.push(l);
    }

    /// Fetches `target` and the chain below it (`prev` links) until it meets what is
    /// linked here, the retention horizon or the first reading.
    pub(super) fn start_fetch(
        &mut self,
        target: Cid,
        topic: &str,
        expected: u64,
        via: Option<PeerId>,
    ) {
        if !self.graph.start_fetch(target, expected) {
            return;
        }
        let mut peers: Vec<PeerId> = via.into_iter().collect();
        peers.extend(
            self.deps
                .net
                .peer_ids()
                .into_iter()
                .filter(|p| Some(*p) != via),
        );
        let want = Want {
            target,
            expected,
            min_time: self.horizon(topic),
            peers,
        };
        let fetcher = self.fetcher.clone();
        let tx = self.internal_tx.clone();
        let slots = self.fetch_slots.clone();
        tracing::info!(%target, expected, "catch-up started");
        tokio::spawn(async move {
            let _permit = slots.acquire().await;
            let fetched = fetcher.fetch_chain(want).await;
            let _ = tx.send(Internal::Fetched(fetched)).await;
        });
    }

    /// Chains whose fetch found no peer (or predate this run) are tried again with a new peer.
    fn refetch_orphans(&mut self, peer: PeerId) {
        for (parent, child) in self.graph.orphans() {
            let expected = self.expected_below(&child);
            self.start_fetch(parent, &child.topic, expected, Some(peer));
        }
    }

    fn ask_heads(&self, peer: PeerId) {
        self.ask_heads_after(peer, Duration::ZERO);
    }

    fn ask_heads_after(&self, peer: PeerId, delay: Duration) {
        let net = self.deps.net.clone();
        let tx = self.internal_tx.clone();
        let topics = self.deps.topics.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let r = match net.request(peer, SyncRequest::Heads { topics }).await {
                Ok(SyncResponse::Heads(h)) => Ok(h),
                Ok(SyncResponse::Error(e)) => Err(NetError::Request(e)),
                Ok(_) => Err(NetError::Request("unexpected answer to Heads".into())),
                Err(e) => Err(e),
            };
            let _ = tx.send(Internal::Heads(peer, r)).await;
        });
    }

    async fn internal(&mut self, msg: Internal) {
        match msg {
            Internal::Heads(peer, Err(e)) => {
                tracing::debug!(%peer, error = %e, "heads exchange failed");
                let connected = self.deps.net.is_connected(&peer);
                if self.readiness.failed(&peer, connected) {
                    self.ask_heads_after(peer, HEADS_RETRY);
                }
            }
            Internal::Heads(peer, Ok(heads)) => {
                let counts = self.readiness.counts(&peer);
                for h in heads {
                    let Ok(cid) = Cid::try_from(h.cid.as_slice()) else {
                        continue;
                    };
                    // Any head not linked here is history this node lacks, whatever its seq:
                    // a sibling written concurrently elsewhere may be lower than ours.
                    if self.is_linked(&cid) {
                        continue;
                    }
                    if counts {
                        self.readiness.expect(cid);
                    }
                    if !self.graph.is_known(&cid) {
                        let ours = self.head_seq(&h.topic, &h.source);
                        let expected = h.seq.saturating_sub(ours).max(1);
                        self.start_fetch(cid, &h.topic, expected, Some(peer));
                    }
                }
                self.readiness.answered(&peer);
            }
            Internal::Fetched(f) => self.fetched(f).await,
        }
    }

    /// Links a fetched chain oldest first, then whatever was waiting on its newest block.
    async fn fetched(&mut self, f: Fetched) {
        self.graph.end_fetch(&f.target);
        let repair = self.repairs.remove(&f.target);
        if !f.complete && f.blocks.is_empty() {
            // Nobody could supply it: readiness does not wait for the impossible.
            self.readiness.settled(&f.target);
        }
        // A repair that found nothing leaves its hole as it was: no new gap.
        let found_nothing = repair && f.blocks.is_empty();
        if !f.complete && !found_nothing {
            self.deps.metrics.catchup_gaps.inc();
            tracing::warn!(target = %f.target, got = f.blocks.len(), "no peer holds the rest of this chain; delivering what arrived with a gap (the repair sweep asks again later)");
        }
        if repair && !f.blocks.is_empty() {
            tracing::info!(hole = %f.target, blocks = f.blocks.len(), "a hole was filled");
        }
        // What links to the missing block: the oldest block fetched, else the readings that
        // waited for the target.
        let mut below = f
            .blocks
            .last()
            .map(|(_, r, _)| (r.topic.clone(), r.source.clone(), r.time));
        let mut out = Batch::default();
        let mut deliver = Vec::new();
        let mut linked_now = HashSet::new();
        let mut fetch: Vec<(Cid, Reading)> = Vec::new();
        let count = f.blocks.len();
        // The walk followed `prev` links: each block's prev is the block after it in this
        // list, and the oldest block's prev is linked here, absent, beyond the horizon or (an
        // incomplete walk) a gap. Only joined heads may still be missing.
        let gap_or_done = f.blocks.last().and_then(|(_, r, _)| r.prev);
        for (i, (cid, reading, bytes)) in f.blocks.into_iter().rev().enumerate() {
            // Gossip or a publish here may have linked it while the fetch ran: deliver it
            // once. A publish here links without this actor, so what waits for the block is
            // released now; a reading linked through the graph has released its own.
            if linked_now.contains(&cid) || self.is_linked(&cid) {
                for l in self.graph.linked_elsewhere(&cid) {
                    self.record_linked(l, &mut out, &mut deliver, &mut linked_now);
                }
                continue;
            }
            out.blocks.push((cid, bytes.clone()));
            let horizon = self.horizon(&reading.topic);
            let missing = graph::missing_parents(&reading, horizon, |p| {
                linked_now.contains(p) || self.is_linked(p) || (i == 0 && Some(*p) == gap_or_done)
            });
            let item = Linked {
                cid,
                reading,
                backfilled: true,
                from: None,
                seqno: None,
                data: Arc::new(bytes),
            };
            if missing.is_empty() {
                self.link(item, &mut out, &mut deliver, &mut linked_now);
            } else {
                out.pending.push(cid);
                let child = item.reading.clone();
                for parent in self.graph.wait(item, missing) {
                    fetch.push((parent, child.clone()));
                }
            }
        }
        // Readings waiting on a block nobody could supply (or beyond the horizon) stop
        // waiting for it.
        if count == 0 {
            for l in self.graph.link_past(&f.target) {
                if below.is_none() {
                    below = Some((
                        l.reading.topic.clone(),
                        l.reading.source.clone(),
                        l.reading.time,
                    ));
                }
                self.record_linked(l, &mut out, &mut deliver, &mut linked_now);
            }
        }
        if let (false, Some(missing), Some((topic, source, before_ms))) =
            (f.complete, f.missing, below)
        {
            if before_ms >= self.horizon(&topic) {
                out.holes.push(Hole {
                    cid: missing,
                    topic,
                    source,
                    before_ms,
                });
            }
        }
        if let Err(e) = self.deps.store.write(out).await {
            tracing::error!(error = %e, "could not store fetched blocks");
            return;
        }
        self.update_hole_gauge();
        if count > 0 {
            tracing::info!(blocks = count, "catch-up finished for a chain");
        }
        for l in deliver {
            self.deps.bus.deliver(l);
        }
        for (parent, child) in fetch {
            let expected = self.expected_below(&child);
            self.start_fetch(parent, &child.topic, expected, None);
        }
    }
}
