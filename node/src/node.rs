//! The node's shared state and the operations the API offers: publish a reading or a raw
//! payload, subscribe, read history and blocks. Data flows one way: reading → store → gossip
//! → local subscribers.

use std::collections::HashMap;
use std::sync::Arc;

use cid::Cid;
use libp2p::identity::PublicKey;
use libp2p::PeerId;
use tokio::sync::{watch, Mutex};

use crate::bus::{Bus, Delivery};
use crate::config::Config;
use crate::metrics::{Metrics, SourceLabel};
use crate::p2p::Handle;
use crate::reading::{canonical_topic, known_topic, Reading, ReadingError};
use crate::store::{Batch, Store, StoreError};

/// One lock per (topic, source): a source's readings get consecutive seqs.
type SourceLocks = HashMap<(String, String), Arc<Mutex<()>>>;

/// Publishing failures.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Invalid(#[from] ReadingError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the network task has stopped; the node is shutting down")]
    Stopped,
}

/// Fields of a reading to publish; the node fills `seq`, `prev` and defaults.
#[derive(Debug, Clone, Default)]
pub struct NewReading {
    /// Topic (aliases allowed).
    pub topic: String,
    /// Value.
    pub value: f64,
    /// Unit; defaults to the known topic's unit.
    pub unit: Option<String>,
    /// Source id; defaults to the node's own.
    pub source: Option<String>,
    /// Measurement time (unix ms); defaults to now.
    pub time: Option<u64>,
    /// AQI for air-quality readings.
    pub aqi: Option<u16>,
}

/// Shared node state; cheap to clone.
#[derive(Clone)]
pub struct Node {
    /// Our peer id.
    pub peer_id: PeerId,
    /// Our public key.
    pub public_key: PublicKey,
    /// Block store.
    pub store: Store,
    /// Swarm handle.
    pub net: Handle,
    /// Local delivery.
    pub bus: Arc<Bus>,
    /// Metrics.
    pub metrics: Metrics,
    /// Settings.
    pub config: Arc<Config>,
    /// True once the initial catch-up is done.
    pub ready: watch::Receiver<bool>,
    /// Default source id for readings published through this node.
    pub default_source: String,
    source_locks: Arc<std::sync::Mutex<SourceLocks>>,
}

/// Current unix time in ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Node {
    /// Assembles the node from its parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        public_key: PublicKey,
        store: Store,
        net: Handle,
        bus: Arc<Bus>,
        metrics: Metrics,
        config: Arc<Config>,
        ready: watch::Receiver<bool>,
        default_source: String,
    ) -> Node {
        Node {
            peer_id: public_key.to_peer_id(),
            public_key,
            store,
            net,
            bus,
            metrics,
            config,
            ready,
            default_source,
            source_locks: Default::default(),
        }
    }

    fn source_lock(&self, topic: &str, source: &str) -> Arc<Mutex<()>> {
        let mut locks = self.source_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks
            .entry((topic.to_string(), source.to_string()))
            .or_default()
            .clone()
    }

    /// Publishes a reading: chained to the source's head, committed, then gossiped.
    /// Returns once the block is durable.
    pub async fn publish_reading(&self, new: NewReading) -> Result<(Cid, Reading), PublishError> {
        let topic = canonical_topic(new.topic.trim()).to_string();
        let unit = new
            .unit
            .or_else(|| known_topic(&topic).map(|t| t.unit.to_string()))
            .unwrap_or_default();
        let source = new.source.unwrap_or_else(|| self.default_source.clone());
        let mut reading = Reading {
            aqi: new.aqi,
            seq: 1,
            prev: None,
            time: new.time.unwrap_or_else(now_ms),
            unit,
            topic,
            value: new.value,
            source,
        };
        reading.validate()?;
        let lock = self.source_lock(&reading.topic, &reading.source);
        let _guard = lock.lock().await;
        if let Some(head) = self.store.head(&reading.topic, &reading.source)? {
            reading.seq = head.seq + 1;
            reading.prev = Some(head.cid);
        }
        let (cid, bytes) = reading.encode();
        let size = bytes.len() as u64;
        let committed = self
            .store
            .submit(Batch {
                blocks: vec![(cid, bytes.clone())],
                linked: vec![(cid, reading.clone(), size)],
                ..Batch::default()
            })
            .await?;
        // Gossip goes out while the commit runs, still in per-source order (under the lock);
        // the publisher's answer waits for the commit. Should the node die before it commits,
        // peers hold the reading and the restarted node fetches it back with the heads.
        let data = Arc::new(bytes);
        match self.net.publish(&reading.topic, data.to_vec()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(topic = %reading.topic, error = %e, "gossip publish failed; peers will catch up by CID")
            }
            Err(_) => return Err(PublishError::Stopped),
        }
        committed.wait().await?;
        self.metrics
            .published
            .get_or_create(&Metrics::topic(&reading.topic))
            .inc();
        self.deliver(cid, &reading, false, Some(self.peer_id), None, data);
        Ok((cid, reading))
    }

    /// Publishes an opaque payload (Kubo `pubsub/pub`); a payload that is a valid reading
    /// block is stored as one so it can be fetched by CID.
    pub async fn publish_raw(&self, topic: &str, data: Vec<u8>) -> Result<(), PublishError> {
        let topic = canonical_topic(topic).to_string();
        if crate::reading::looks_like_reading(&data) {
            let reading = Reading::decode(&data)?;
            let cid = crate::reading::cid_of(crate::reading::DAG_CBOR, &data);
            let size = data.len() as u64;
            // Stored as linked only if its chain is here; otherwise peers' catch-up links it.
            let linked = reading
                .prev
                .is_none_or(|p| self.store.is_linked(&p).unwrap_or(false));
            let mut batch = Batch {
                blocks: vec![(cid, data.clone())],
                ..Batch::default()
            };
            if linked {
                batch.linked.push((cid, reading.clone(), size));
            } else {
                batch.pending.push(cid);
            }
            self.store.write(batch).await?;
            self.net
                .publish(&topic, data.clone())
                .await
                .map_err(|_| PublishError::Stopped)?
                .ok();
            if linked {
                self.deliver(
                    cid,
                    &reading,
                    false,
                    Some(self.peer_id),
                    None,
                    Arc::new(data),
                );
            }
            return Ok(());
        }
        if known_topic(&topic).is_some() {
            // Sensor topics carry readings only; `ipfs pubsub pub temperature 25` means a reading.
            let text = String::from_utf8_lossy(&data);
            let value: f64 = text.trim().parse().map_err(|_| {
                ReadingError::Decode(format!(
                    "topic {topic} carries sensor readings: send a number such as 21.5 or a DAG-CBOR reading block"
                ))
            })?;
            self.publish_reading(NewReading {
                topic,
                value,
                ..NewReading::default()
            })
            .await?;
            return Ok(());
        }
        self.net
            .publish(&topic, data.clone())
            .await
            .map_err(|_| PublishError::Stopped)?
            .ok();
        self.bus.send(
            &topic,
            Delivery::Raw {
                from: Some(self.peer_id),
                seqno: None,
                data: Arc::new(data),
            },
        );
        Ok(())
    }

    /// Hands a linked reading to local subscribers and updates the per-source metrics.
    pub fn deliver(
        &self,
        cid: Cid,
        reading: &Reading,
        backfilled: bool,
        from: Option<PeerId>,
        seqno: Option<u64>,
        data: Arc<Vec<u8>>,
    ) {
        let label = Metrics::topic(&reading.topic);
        self.metrics.delivered.get_or_create(&label).inc();
        if !backfilled {
            let delay = now_ms().saturating_sub(reading.time) as f64 / 1000.0;
            self.metrics.delay.get_or_create(&label).observe(delay);
        }
        let src = SourceLabel {
            topic: reading.topic.clone(),
            source: reading.source.clone(),
        };
        // Catch-up delivers older readings too: only a newer one is the source's latest.
        let seen = self.metrics.last_seen.get_or_create(&src);
        let t = reading.time as f64 / 1000.0;
        if t >= seen.get() {
            seen.set(t);
            self.metrics
                .last_value
                .get_or_create(&src)
                .set(reading.value);
        }
        self.bus.send(
            &reading.topic,
            Delivery::Reading {
                cid,
                reading: Box::new(reading.clone()),
                backfilled,
                from,
                seqno,
                data,
            },
        );
    }
}
