//! Local delivery: where readings published here and readings received from peers meet on
//! their way to this node's subscribers. One bounded broadcast channel per topic; a
//! subscriber that falls behind loses the oldest messages, counted and logged, instead of
//! growing memory (they stay in the store: `node history`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cid::Cid;
use libp2p::PeerId;
use tokio::sync::broadcast;

use crate::clock::now_ms;
use crate::metrics::{Metrics, SourceLabel, TopicLabel};
use crate::p2p::Handle;
use crate::reading::Reading;

/// Messages buffered per topic for slow subscribers.
const CAPACITY: usize = 4096;

/// Something delivered on a topic.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A validated reading whose chain is complete.
    Reading {
        /// Its CID.
        cid: Cid,
        /// The reading.
        reading: Box<Reading>,
        /// Fetched during catch-up rather than received live.
        backfilled: bool,
        /// Gossip publisher and seqno when received live.
        from: Option<PeerId>,
        /// Gossip sequence number.
        seqno: Option<u64>,
        /// The block bytes (the gossip payload).
        data: Arc<Vec<u8>>,
    },
    /// An opaque pubsub payload (`ipfs pubsub pub`).
    Raw {
        /// Publisher.
        from: Option<PeerId>,
        /// Gossip sequence number.
        seqno: Option<u64>,
        /// Payload.
        data: Arc<Vec<u8>>,
    },
}

/// A reading ready for subscribers, as [`Bus::deliver`] takes it.
#[derive(Debug, Clone)]
pub struct Linked {
    /// Its CID.
    pub cid: Cid,
    /// The reading.
    pub reading: Reading,
    /// Fetched during catch-up rather than received live.
    pub backfilled: bool,
    /// Gossip publisher, when known.
    pub from: Option<PeerId>,
    /// Gossip sequence number, when received live.
    pub seqno: Option<u64>,
    /// The block bytes.
    pub data: Arc<Vec<u8>>,
}

/// Per-topic delivery channels; cheap to clone.
#[derive(Clone)]
pub struct Bus {
    topics: Arc<Mutex<HashMap<String, broadcast::Sender<Arc<Delivery>>>>>,
    metrics: Metrics,
    net: Handle,
}

impl Bus {
    /// A bus whose subscriptions also join the topic's gossip mesh through `net`.
    pub fn new(metrics: Metrics, net: Handle) -> Bus {
        Bus {
            topics: Default::default(),
            metrics,
            net,
        }
    }

    fn send(&self, topic: &str, d: Delivery) {
        let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = topics.get(topic) {
            let _ = tx.send(Arc::new(d));
        }
    }

    /// Hands a linked reading to the topic's subscribers and updates the per-source metrics.
    pub fn deliver(&self, l: Linked) {
        let label = Metrics::topic(&l.reading.topic);
        self.metrics.delivered.get_or_create(&label).inc();
        if !l.backfilled {
            let delay = now_ms().saturating_sub(l.reading.time) as f64 / 1000.0;
            self.metrics.delay.get_or_create(&label).observe(delay);
        }
        let src = SourceLabel {
            topic: l.reading.topic.clone(),
            source: l.reading.source.clone(),
        };
        // Catch-up delivers older readings too: only a newer one is the source's latest.
        let seen = self.metrics.last_seen.get_or_create(&src);
        let t = l.reading.time as f64 / 1000.0;
        if t >= seen.get() {
            seen.set(t);
            self.metrics
                .last_value
                .get_or_create(&src)
                .set(l.reading.value);
        }
        let topic = l.reading.topic.clone();
        self.send(
            &topic,
            Delivery::Reading {
                cid: l.cid,
                reading: Box::new(l.reading),
                backfilled: l.backfilled,
                from: l.from,
                seqno: l.seqno,
                data: l.data,
            },
        );
    }

    /// Hands an opaque payload to the topic's subscribers.
    pub fn deliver_raw(
        &self,
        topic: &str,
        from: Option<PeerId>,
        seqno: Option<u64>,
        data: Arc<Vec<u8>>,
    ) {
        self.send(topic, Delivery::Raw { from, seqno, data });
    }

    /// Follows a topic: joins its gossip mesh (so peers' messages reach this node) and
    /// returns a receiver counted in `sensornet_subscribers` until it is dropped.
    pub async fn subscribe(&self, topic: &str) -> Subscription {
        self.net.subscribe(topic).await;
        let rx = {
            let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
            topics
                .entry(topic.to_string())
                .or_insert_with(|| broadcast::channel(CAPACITY).0)
                .subscribe()
        };
        let label = Metrics::topic(topic);
        self.metrics.subscribers.get_or_create(&label).inc();
        Subscription {
            rx,
            metrics: self.metrics.clone(),
            label,
        }
    }

    /// Subscribers per topic.
    pub fn counts(&self) -> Vec<(String, usize)> {
        let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics
            .iter()
            .map(|(t, tx)| (t.clone(), tx.receiver_count()))
            .collect()
    }
}

/// What a [`Subscription`] yields.
#[derive(Debug)]
pub enum Received {
    /// The next delivery.
    Delivery(Arc<Delivery>),
    /// This many deliveries were dropped because the subscriber fell behind.
    Dropped(u64),
}

/// One subscriber of a topic; leaves the subscriber gauge when dropped.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Delivery>>,
    metrics: Metrics,
    label: TopicLabel,
}

impl Subscription {
    /// The next delivery, or how many were dropped; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Received> {
        match self.rx.recv().await {
            Ok(d) => Some(Received::Delivery(d)),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(topic = %self.label.topic, dropped = n, "slow subscriber; dropped readings (they stay in the store: use `node history`)");
                self.metrics
                    .subscriber_dropped
                    .get_or_create(&self.label)
                    .inc_by(n);
                Some(Received::Dropped(n))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.metrics.subscribers.get_or_create(&self.label).dec();
    }
}
