//! Ingest and catch-up: validates gossip, stores readings in groups, delivers them in
//! per-source order, fetches missing chains by CID and exchanges heads with peers so a
//! (re)started node catches up before it reports ready.

pub mod fetch;
pub mod protocol;
pub mod replay;
pub mod serve;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use libp2p::gossipsub::MessageAcceptance;
use libp2p::PeerId;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::bus::Delivery;
use crate::metrics::Metrics;
use crate::node::{now_ms, Node};
use crate::p2p::{Inbound, NetEvent};
use crate::reading::{canonical_topic, cid_of, known_topic, looks_like_reading, Reading, DAG_CBOR};
use crate::store::Batch;
use fetch::{Fetched, Want};
use protocol::{SyncRequest, SyncResponse};

/// Most gossip messages folded into one store transaction.
const MAX_INGEST_BATCH: usize = 1024;
/// Chain fetches running at once.
const MAX_FETCHES: usize = 8;
/// How often heads are compared with every peer (heals partitions for quiet sources).
const HEADS_EVERY: Duration = Duration::from_secs(15);

/// A reading waiting for its `prev` to be linked.
struct Waiting {
    cid: Cid,
    reading: Reading,
    size: u64,
    from: Option<PeerId>,
    seqno: Option<u64>,
    data: Arc<Vec<u8>>,
}

enum Internal {
    Heads(PeerId, Result<Vec<protocol::WireHead>, String>),
    Fetched(Fetched),
}

/// The ingest/catch-up actor.
pub struct Sync {
    node: Node,
    internal_tx: mpsc::Sender<Internal>,
    /// prev CID → readings waiting for it.
    waiting: HashMap<Cid, Vec<Waiting>>,
    /// CIDs of waiting readings (so their children wait too, without a new fetch).
    pending: HashSet<Cid>,
    /// Targets being fetched, with the number of readings they are expected to bring.
    inflight: HashMap<Cid, u64>,
    fetch_slots: Arc<Semaphore>,
    connected: HashSet<PeerId>,
    /// Peers whose heads the initial catch-up still waits for (None until bootstrap tried).
    initial: Option<HashSet<PeerId>>,
    /// Heads the peers reported during the initial catch-up that are not linked here yet;
    /// readiness waits for exactly these, so a node under a steady stream of new readings
    /// still turns ready, and never before it holds what its peers held when it asked.
    initial_heads: HashSet<Cid>,
    /// Failed heads requests per peer during the initial catch-up.
    heads_failures: HashMap<PeerId, u32>,
    ready: watch::Sender<bool>,
    replay: replay::ReplayGuard,
}

impl Sync {
    /// Runs the actor until the network events end.
    pub async fn run(
        node: Node,
        mut events: mpsc::Receiver<NetEvent>,
        mut bootstrap_done: watch::Receiver<bool>,
        ready: watch::Sender<bool>,
    ) {
        let (internal_tx, mut internal_rx) = mpsc::channel(256);
        let mut me = Sync {
            node,
            internal_tx,
            waiting: HashMap::new(),
            pending: HashSet::new(),
            inflight: HashMap::new(),
            fetch_slots: Arc::new(Semaphore::new(MAX_FETCHES)),
            connected: HashSet::new(),
            initial: None,
            initial_heads: HashSet::new(),
            heads_failures: HashMap::new(),
            ready,
            replay: replay::ReplayGuard::default(),
        };
        me.resume_pending();
        let mut heads_tick = tokio::time::interval(HEADS_EVERY);
        heads_tick.tick().await;
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
                }
                Some(msg) = internal_rx.recv() => me.internal(msg).await,
                changed = bootstrap_done.changed(), if !bootstrap_seen => {
                    if changed.is_err() || *bootstrap_done.borrow() {
                        bootstrap_seen = true;
                        // The swarm's own list, not our event-fed one: a Connected event may
                        // still be queued, and its peer must count for the initial catch-up.
                        let peers = me.node.net.peers().await.unwrap_or_default();
                        let initial: HashSet<PeerId> = peers.iter().map(|p| p.peer).collect();
                        for p in &initial {
                            me.connected.insert(*p);
                            me.ask_heads(*p);
                        }
                        me.initial = Some(initial);
                    }
                }
                _ = heads_tick.tick() => {
                    for p in me.connected.clone() {
                        me.ask_heads(p);
                    }
                }
            }
            me.check_ready();
            me.node
                .metrics
                .catchup_lag
                .set(me.inflight.values().sum::<u64>() as i64);
        }
    }

    fn check_ready(&mut self) {
        if *self.ready.borrow() {
            return;
        }
        if let Some(initial) = &self.initial {
            if initial.is_empty() && self.initial_heads.is_empty() {
                tracing::info!("catch-up finished; node is ready");
                self.node.metrics.ready.set(1);
                let _ = self.ready.send(true);
            }
        }
    }

    /// Readings left unlinked by a previous run resume their fetch.
    fn resume_pending(&mut self) {
        let Ok(pending) = self.node.store.pending() else {
            return;
        };
        for p in pending {
            let Some(prev) = p.reading.prev else { continue };
            let data = self
                .node
                .store
                .get(&p.cid)
                .ok()
                .flatten()
                .unwrap_or_default();
            self.pending.insert(p.cid);
            self.waiting.entry(prev).or_default().push(Waiting {
                cid: p.cid,
                reading: p.reading,
                size: data.len() as u64,
                from: None,
                seqno: None,
                data: Arc::new(data),
            });
        }
    }

    async fn event(&mut self, ev: NetEvent, batch: &mut Vec<(Inbound, Reading)>) {
        match ev {
            NetEvent::Message(m) => {
                if let Some(r) = self.validate(&m).await {
                    batch.push((m, r));
                }
            }
            NetEvent::Connected(p) => {
                self.connected.insert(p);
                self.node.metrics.peers.set(self.connected.len() as i64);
                self.ask_heads(p);
                self.refetch_waiting(p);
            }
            NetEvent::Disconnected(p) => {
                self.connected.remove(&p);
                self.node.metrics.peers.set(self.connected.len() as i64);
                if let Some(i) = self.initial.as_mut() {
                    i.remove(&p);
                }
            }
        }
    }

    /// Checks a gossip message and reports the verdict to gossipsub; readings go on to ingest.
    async fn validate(&mut self, m: &Inbound) -> Option<Reading> {
        let topic = canonical_topic(&m.topic).to_string();
        let replayed = match (m.from, m.seqno) {
            (Some(from), Some(seqno)) => self.replay.check(from, seqno) != replay::Seen::Fresh,
            _ => false,
        };
        let verdict = if replayed {
            Err("replayed-seqno")
        } else if looks_like_reading(&m.data) {
            match Reading::decode(&m.data) {
                Ok(r) if r.topic == topic => Ok(Some(r)),
                Ok(_) => Err("wrong-topic"),
                Err(crate::reading::ReadingError::Decode(_)) => Err("not-cbor"),
                Err(_) => Err("bad-reading"),
            }
        } else if known_topic(&topic).is_some() {
            Err("not-a-reading")
        } else {
            Ok(None)
        };
        match verdict {
            Ok(r) => {
                self.node
                    .net
                    .report(m.id.clone(), m.via, MessageAcceptance::Accept)
                    .await;
                if r.is_none() {
                    self.node.bus.send(
                        &topic,
                        Delivery::Raw {
                            from: m.from,
                            seqno: m.seqno,
                            data: Arc::new(m.data.clone()),
                        },
                    );
                }
                r
            }
            Err(reason) => {
                tracing::warn!(peer = %m.via, from = ?m.from, %topic, reason, "rejected a bad message from a peer");
                self.node.metrics.reject(&topic, reason);
                self.node
                    .net
                    .report(m.id.clone(), m.via, MessageAcceptance::Reject)
                    .await;
                None
            }
        }
    }

    /// Stores a group of validated readings in one transaction, then delivers those whose
    /// chain is complete and starts fetches for the others.
    async fn ingest(&mut self, batch: Vec<(Inbound, Reading)>) {
        if batch.is_empty() {
            return;
        }
        let mut out = Batch::default();
        let mut deliver: Vec<Waiting> = Vec::new();
        let mut linked_now: HashSet<Cid> = HashSet::new();
        let mut fetch: Vec<(Cid, Reading, PeerId)> = Vec::new();
        for (m, reading) in batch {
            let cid = cid_of(DAG_CBOR, &m.data);
            self.node
                .metrics
                .received
                .get_or_create(&Metrics::topic(&reading.topic))
                .inc();
            if linked_now.contains(&cid)
                || self.pending.contains(&cid)
                || self.node.store.is_linked(&cid).unwrap_or(false)
            {
                continue;
            }
            let size = m.data.len() as u64;
            let w = Waiting {
                cid,
                reading,
                size,
                from: m.from,
                seqno: m.seqno,
                data: Arc::new(m.data),
            };
            out.blocks.push((cid, w.data.to_vec()));
            if self.is_linkable(&w.reading, &linked_now) {
                self.link(w, &mut out, &mut deliver, &mut linked_now);
            } else {
                let prev = w.reading.prev.expect("unlinkable readings have a prev");
                out.pending.push(cid);
                self.pending.insert(cid);
                if !self.pending.contains(&prev) && !self.inflight.contains_key(&prev) {
                    fetch.push((prev, w.reading.clone(), m.via));
                }
                self.waiting.entry(prev).or_default().push(w);
            }
        }
        // Subscribers get gossip before this node's own commit: the publisher acknowledged
        // the reading only once it was durable there, so a crash here loses nothing (catch-up
        // refetches it), and the delay is one fsync shorter.
        for w in deliver {
            self.node
                .deliver(w.cid, &w.reading, false, w.from, w.seqno, w.data);
        }
        if let Err(e) = self.node.store.write(out).await {
            tracing::error!(error = %e, "could not store received readings; peers will resend them on catch-up");
            return;
        }
        for (prev, child, via) in fetch {
            let stop_seq = self.head_seq(&child.topic, &child.source);
            self.start_fetch(
                prev,
                stop_seq,
                &child.topic,
                child.seq.saturating_sub(stop_seq + 1),
                via,
            );
        }
    }

    /// The newest seq of a source held here (0 for none).
    fn head_seq(&self, topic: &str, source: &str) -> u64 {
        self.node
            .store
            .head(topic, source)
            .ok()
            .flatten()
            .map_or(0, |h| h.seq)
    }

    fn is_linkable(&self, r: &Reading, linked_now: &HashSet<Cid>) -> bool {
        let horizon = self.horizon(&r.topic);
        match r.prev {
            None => true,
            Some(p) => {
                linked_now.contains(&p)
                    || r.time < horizon
                    || self.node.store.is_linked(&p).unwrap_or(false)
            }
        }
    }

    fn horizon(&self, topic: &str) -> u64 {
        let age = self.node.config.retention_for(topic).max_age.as_millis() as u64;
        now_ms().saturating_sub(age)
    }

    /// Marks a reading linked and, transitively, every reading that was waiting for it.
    fn link(
        &mut self,
        w: Waiting,
        out: &mut Batch,
        deliver: &mut Vec<Waiting>,
        linked_now: &mut HashSet<Cid>,
    ) {
        let mut stack = vec![w];
        while let Some(w) = stack.pop() {
            self.pending.remove(&w.cid);
            self.initial_heads.remove(&w.cid);
            linked_now.insert(w.cid);
            out.linked.push((w.cid, w.reading.clone(), w.size));
            if let Some(children) = self.waiting.remove(&w.cid) {
                stack.extend(children);
            }
            deliver.push(w);
        }
    }

    fn start_fetch(&mut self, target: Cid, stop_seq: u64, topic: &str, expected: u64, via: PeerId) {
        if self.inflight.contains_key(&target) {
            return;
        }
        self.inflight.insert(target, expected.max(1));
        let mut peers: Vec<PeerId> = vec![via];
        peers.extend(self.connected.iter().filter(|p| **p != via));
        let want = Want {
            target,
            stop_seq,
            min_time: self.horizon(topic),
            peers,
        };
        let node = self.node.clone();
        let tx = self.internal_tx.clone();
        let slots = self.fetch_slots.clone();
        tracing::info!(%target, stop_seq, "catch-up started");
        tokio::spawn(async move {
            let _permit = slots.acquire().await;
            let fetched = fetch::fetch_chain(&node, want).await;
            let _ = tx.send(Internal::Fetched(fetched)).await;
        });
    }

    /// Chains whose fetch found no peer (or predate this run) are tried again with a new peer.
    fn refetch_waiting(&mut self, peer: PeerId) {
        let orphans: Vec<(Cid, Reading)> = self
            .waiting
            .iter()
            .filter(|(prev, _)| !self.pending.contains(*prev) && !self.inflight.contains_key(*prev))
            .filter_map(|(prev, ws)| ws.first().map(|w| (*prev, w.reading.clone())))
            .collect();
        for (prev, child) in orphans {
            let stop = self.head_seq(&child.topic, &child.source);
            self.start_fetch(
                prev,
                stop,
                &child.topic,
                child.seq.saturating_sub(stop + 1),
                peer,
            );
        }
    }

    fn ask_heads(&self, peer: PeerId) {
        self.ask_heads_after(peer, Duration::ZERO);
    }

    fn ask_heads_after(&self, peer: PeerId, delay: Duration) {
        let node = self.node.clone();
        let tx = self.internal_tx.clone();
        let topics = self.node.config.topics.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let r = match node.net.request(peer, SyncRequest::Heads { topics }).await {
                Ok(Ok(SyncResponse::Heads(h))) => Ok(h),
                Ok(Ok(_)) => Err("unexpected answer".to_string()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(e.to_string()),
            };
            let _ = tx.send(Internal::Heads(peer, r)).await;
        });
    }

    async fn internal(&mut self, msg: Internal) {
        match msg {
            Internal::Heads(peer, result) => {
                let heads = match result {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "heads exchange failed");
                        let waiting = self.initial.as_ref().is_some_and(|i| i.contains(&peer));
                        let failures = {
                            let f = self.heads_failures.entry(peer).or_insert(0);
                            *f += 1;
                            *f
                        };
                        if waiting && failures < 5 && self.connected.contains(&peer) {
                            // Readiness must not come from a failed exchange: ask again.
                            self.ask_heads_after(peer, Duration::from_millis(500));
                        } else if let Some(i) = self.initial.as_mut() {
                            i.remove(&peer);
                        }
                        return;
                    }
                };
                let counts_for_ready = self.initial.as_ref().is_some_and(|i| i.contains(&peer))
                    && !*self.ready.borrow();
                for h in heads {
                    let Ok(cid) = Cid::try_from(h.cid.as_slice()) else {
                        continue;
                    };
                    if counts_for_ready && !self.node.store.is_linked(&cid).unwrap_or(false) {
                        let ours = self.head_seq(&h.topic, &h.source);
                        if h.seq > ours {
                            self.initial_heads.insert(cid);
                        }
                    }
                    if self.pending.contains(&cid)
                        || self.inflight.contains_key(&cid)
                        || self.node.store.is_linked(&cid).unwrap_or(false)
                    {
                        continue;
                    }
                    let ours = self.head_seq(&h.topic, &h.source);
                    if h.seq > ours {
                        self.start_fetch(cid, ours, &h.topic, h.seq - ours, peer);
                    }
                }
                if let Some(i) = self.initial.as_mut() {
                    i.remove(&peer);
                }
            }
            Internal::Fetched(f) => self.fetched(f).await,
        }
    }

    /// Links a fetched chain oldest first, then whatever was waiting on its newest block.
    async fn fetched(&mut self, f: Fetched) {
        self.inflight.remove(&f.target);
        if !f.complete && f.blocks.is_empty() {
            // Nobody could supply it: readiness does not wait for the impossible.
            self.initial_heads.remove(&f.target);
        }
        if !f.complete {
            self.node.metrics.catchup_gaps.inc();
            tracing::warn!(target = %f.target, got = f.blocks.len(), "no peer holds the rest of this chain; delivering what arrived with a gap");
        }
        let mut out = Batch::default();
        let mut deliver = Vec::new();
        let mut linked_now = HashSet::new();
        let count = f.blocks.len();
        for (cid, reading, bytes) in f.blocks.into_iter().rev() {
            // Gossip may have brought and linked it while the fetch ran: deliver it once.
            if linked_now.contains(&cid) || self.node.store.is_linked(&cid).unwrap_or(false) {
                continue;
            }
            out.blocks.push((cid, bytes.clone()));
            let w = Waiting {
                cid,
                size: bytes.len() as u64,
                reading,
                from: None,
                seqno: None,
                data: Arc::new(bytes),
            };
            self.link(w, &mut out, &mut deliver, &mut linked_now);
        }
        // Readings waiting on a block nobody could supply are linked past the gap.
        if !f.complete || count == 0 {
            if let Some(children) = self.waiting.remove(&f.target) {
                for c in children {
                    self.link(c, &mut out, &mut deliver, &mut linked_now);
                }
            }
        }
        if let Err(e) = self.node.store.write(out).await {
            tracing::error!(error = %e, "could not store fetched blocks");
            return;
        }
        if count > 0 {
            tracing::info!(blocks = count, "catch-up finished for a chain");
        }
        let fetched_set: HashSet<Cid> = deliver.iter().map(|w| w.cid).collect();
        for w in deliver {
            let backfilled = w.from.is_none() && fetched_set.contains(&w.cid) && w.seqno.is_none();
            self.node
                .deliver(w.cid, &w.reading, backfilled, w.from, w.seqno, w.data);
        }
    }
}
