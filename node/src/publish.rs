//! Publishing from this node: a reading is chained to its source's head, committed, gossiped
//! and delivered locally; a raw `pubsub/pub` payload is gossiped (and, when it is a reading
//! block, stored through the same path as gossip).

use std::collections::HashMap;
use std::sync::Arc;

use cid::Cid;
use tokio::sync::{watch, Mutex};

use crate::bus::{Bus, Linked};
use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::p2p::{Handle, NetError};
use crate::reading::{canonical_topic, known_topic, Reading, ReadingError};
use crate::store::{Batch, Store, StoreError};
use crate::sync::{IngestError, LocalIngest};

/// How long a publish waits for the node's initial catch-up before it is refused.
pub const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// One lock per (topic, source): a source's readings get consecutive seqs.
type SourceLocks = HashMap<(String, String), Arc<Mutex<()>>>;

/// Publishing failures.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Invalid(#[from] ReadingError),
    /// A reading of a batch failed its checks; nothing of the batch was published.
    #[error("reading {index} of the batch: {error}; nothing of the batch was published")]
    InBatch {
        /// Position in the batch, from 1.
        index: usize,
        /// What is wrong with it.
        error: ReadingError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the node is shutting down")]
    Stopped,
    /// The node has not caught up with its peers yet: writing now could start a source
    /// again at its beginning, or chain onto a stale head.
    #[error("this node is still catching up with its peers (not ready after {0:?}); retry shortly or publish through another node")]
    NotReady(std::time::Duration),
}

impl From<IngestError> for PublishError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Store(e) => PublishError::Store(e),
            IngestError::Stopped => PublishError::Stopped,
        }
    }
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

/// What a gossip attempt means for the publisher.
fn gossiped(topic: &str, sent: Result<(), NetError>) -> Result<(), PublishError> {
    match sent {
        Ok(()) => Ok(()),
        Err(NetError::Stopped) => Err(PublishError::Stopped),
        Err(e) => {
            tracing::warn!(%topic, error = %e, "gossip publish failed; peers will catch up by CID");
            Ok(())
        }
    }
}

/// Publishes readings and raw payloads; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    store: Store,
    net: Handle,
    bus: Bus,
    ingest: LocalIngest,
    metrics: Metrics,
    ready: watch::Receiver<bool>,
    ready_wait: std::time::Duration,
    default_source: String,
    source_locks: Arc<std::sync::Mutex<SourceLocks>>,
}

impl Publisher {
    /// A publisher whose readings default to `default_source`; readings wait (at most
    /// [`READY_WAIT`]) until `ready` is true.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        net: Handle,
        bus: Bus,
        ingest: LocalIngest,
        metrics: Metrics,
        ready: watch::Receiver<bool>,
        default_source: String,
    ) -> Publisher {
        Publisher {
            store,
            net,
            bus,
            ingest,
            metrics,
            ready,
            ready_wait: READY_WAIT,
            default_source,
            source_locks: Default::default(),
        }
    }

    /// The same publisher with another bound on the wait for readiness.
    pub fn with_ready_wait(mut self, wait: std::time::Duration) -> Publisher {
        self.ready_wait = wait;
        self
    }

    /// A node learns its sources' heads from its peers before it writes for them.
    async fn wait_ready(&self) -> Result<(), PublishError> {
        let mut ready = self.ready.clone();
        if *ready.borrow() {
            return Ok(());
        }
        let waited = tokio::time::timeout(self.ready_wait, ready.wait_for(|r| *r))
            .await
            .map(|r| r.is_ok());
        match waited {
            Ok(true) => Ok(()),
            Ok(false) => Err(PublishError::Stopped),
            Err(_) => Err(PublishError::NotReady(self.ready_wait)),
        }
    }

    fn source_lock(&self, topic: &str, source: &str) -> Arc<Mutex<()>> {
        let mut locks = self.source_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks
            .entry((topic.to_string(), source.to_string()))
            .or_default()
            .clone()
    }

    /// Gossips `data`; a gossip failure is not the publisher's failure (the block is stored
    /// and peers catch up by CID), a stopped network is.
    async fn gossip(&self, topic: &str, data: Vec<u8>) -> Result<(), PublishError> {
        gossiped(topic, self.net.publish(topic, data).await)
    }

    /// Gossips reading blocks of one topic in order (as bundles where several go together);
    /// failures as [`Self::gossip`].
    async fn gossip_readings(&self, topic: &str, blocks: Vec<Vec<u8>>) -> Result<(), PublishError> {
        gossiped(topic, self.net.publish_readings(topic, blocks).await)
    }

    /// Checks a reading to publish and fills the node's defaults; `seq` and `prev` are set
    /// when it is chained, under its source's lock.
    pub fn prepare(&self, new: NewReading) -> Result<Reading, ReadingError> {
        let topic = canonical_topic(new.topic.trim()).to_string();
        let unit = new
            .unit
            .or_else(|| known_topic(&topic).map(|t| t.unit.to_string()))
            .unwrap_or_default();
        let source = new.source.unwrap_or_else(|| self.default_source.clone());
        let reading = Reading {
            aqi: new.aqi,
            seq: 1,
            prev: None,
            joins: Vec::new(),
            time: new.time.unwrap_or_else(now_ms),
            unit,
            topic,
            value: new.value,
            source,
        };
        reading.validate()?;
        Ok(reading)
    }

    /// Publishes a reading: chained to the source's head, committed, then gossiped.
    /// Returns once the block is durable.
    pub async fn publish_reading(&self, new: NewReading) -> Result<(Cid, Reading), PublishError> {
        let reading = self.prepare(new)?;
        let mut done = self.publish_prepared(vec![reading]).await?;
        Ok(done.remove(0))
    }

    /// Publishes many readings at once, all or nothing: every one is checked first (the
    /// error names the first bad one, counted from 1), then all go into one durable commit.
    /// Readings of one source are chained in the order given.
    pub async fn publish_batch(
        &self,
        news: Vec<NewReading>,
    ) -> Result<Vec<(Cid, Reading)>, PublishError> {
        let readings = news
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                self.prepare(n).map_err(|error| PublishError::InBatch {
                    index: i + 1,
                    error,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.publish_prepared(readings).await
    }

    /// Chains, commits (one transaction), gossips and delivers readings from [`Self::prepare`].
    pub async fn publish_prepared(
        &self,
        mut readings: Vec<Reading>,
    ) -> Result<Vec<(Cid, Reading)>, PublishError> {
        if readings.is_empty() {
            return Ok(Vec::new());
        }
        self.wait_ready().await?;
        // Every source of the batch is locked, in one global order so that two batches
        // sharing sources cannot wait on each other.
        let mut keys: Vec<(String, String)> = readings
            .iter()
            .map(|r| (r.topic.clone(), r.source.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        let locks: Vec<_> = keys.iter().map(|(t, s)| self.source_lock(t, s)).collect();
        let mut guards = Vec::with_capacity(locks.len());
        for lock in &locks {
            guards.push(lock.lock().await);
        }
        // A Merkle clock: a source's first reading here follows the greatest head this node
        // holds and joins the others (written concurrently on other nodes), one above the
        // highest of them; the batch's next readings of that source follow it.
        let mut last: HashMap<(String, String), (u64, Cid)> = HashMap::new();
        let mut done = Vec::with_capacity(readings.len());
        let mut batch = Batch::default();
        for mut reading in readings.drain(..) {
            let key = (reading.topic.clone(), reading.source.clone());
            match last.get(&key) {
                Some(&(seq, cid)) => {
                    reading.seq = seq + 1;
                    reading.prev = Some(cid);
                }
                None => {
                    let heads = self.store.heads_of(&reading.topic, &reading.source)?;
                    if let Some(first) = heads.first() {
                        reading.seq = first.seq + 1;
                        reading.prev = Some(first.cid);
                        let mut joins: Vec<Cid> = heads.iter().skip(1).map(|h| h.cid).collect();
                        // More heads than a reading may join: the greatest are joined now,
                        // the rest by the next readings.
                        joins.truncate(crate::reading::MAX_JOINS);
                        joins.sort();
                        reading.joins = joins;
                    }
                }
            }
            let (cid, bytes) = reading.encode();
            last.insert(key, (reading.seq, cid));
            batch
                .linked
                .push((cid, reading.clone(), bytes.len() as u64));
            batch.blocks.push((cid, bytes));
            done.push((cid, reading));
        }
        let datas: Vec<Arc<Vec<u8>>> = batch
            .blocks
            .iter()
            .map(|(_, b)| Arc::new(b.clone()))
            .collect();
        let committed = self.store.submit(batch).await?;
        // Gossip goes out while the commit runs, still in per-source order (under the locks);
        // the publisher's answer waits for the commit. Should the node die before it commits,
        // peers hold the readings and the restarted node fetches them back with the heads.
        let mut by_topic: Vec<(&str, Vec<Vec<u8>>)> = Vec::new();
        for ((_, reading), data) in done.iter().zip(&datas) {
            match by_topic.iter_mut().find(|(t, _)| *t == reading.topic) {
                Some((_, blocks)) => blocks.push(data.to_vec()),
                None => by_topic.push((&reading.topic, vec![data.to_vec()])),
            }
        }
        for (topic, blocks) in by_topic {
            self.gossip_readings(topic, blocks).await?;
        }
        committed.wait().await?;
        for ((cid, reading), data) in done.iter().zip(datas) {
            self.metrics
                .published
                .get_or_create(&Metrics::topic(&reading.topic))
                .inc();
            self.bus.deliver(Linked {
                cid: *cid,
                reading: reading.clone(),
                backfilled: false,
                from: Some(self.net.local),
                seqno: None,
                data,
            });
        }
        // Held until delivered: subscribers here see a source's readings in seq order.
        drop(guards);
        Ok(done)
    }

    /// Publishes an opaque payload (Kubo `pubsub/pub`); a payload that is a valid reading
    /// block is stored as one so it can be fetched by CID.
    pub async fn publish_raw(&self, topic: &str, data: Vec<u8>) -> Result<(), PublishError> {
        let topic = canonical_topic(topic).to_string();
        if crate::reading::looks_like_reading(&data) {
            let reading = Reading::decode(&data)?;
            self.ingest.ingest(reading, data.clone()).await?;
            return self.gossip(&topic, data).await;
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
        self.gossip(&topic, data.clone()).await?;
        self.bus
            .deliver_raw(&topic, Some(self.net.local), None, Arc::new(data));
        Ok(())
    }
}
