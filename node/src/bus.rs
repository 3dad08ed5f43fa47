//! Local delivery: one bounded broadcast channel per topic; a subscriber that falls behind
//! loses the oldest messages, counted and logged, instead of growing memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cid::Cid;
use libp2p::PeerId;
use tokio::sync::broadcast;

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

/// Per-topic delivery channels.
#[derive(Default)]
pub struct Bus {
    topics: Mutex<HashMap<String, broadcast::Sender<Arc<Delivery>>>>,
}

impl Bus {
    /// Sends to the topic's subscribers, if any.
    pub fn send(&self, topic: &str, d: Delivery) {
        let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = topics.get(topic) {
            let _ = tx.send(Arc::new(d));
        }
    }

    /// A new receiver for the topic.
    pub fn subscribe(&self, topic: &str) -> broadcast::Receiver<Arc<Delivery>> {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics
            .entry(topic.to_string())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
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
