//! The single writer thread: queues batches and commits as many as are waiting in one
//! durable transaction (group commit), then answers each caller.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cid::Cid;
use redb::{Database, Durability, ReadableTable};
use tokio::sync::oneshot;

use super::{Hole, Shared, StoreError, BLOCKS, BY_TIME, CHILDREN, HEADS, HOLES, LINKED, PENDING};
use crate::reading::Reading;

/// Most batches folded into one transaction; bounds the latency of the first caller.
const MAX_GROUP: usize = 256;
/// How long a commit under load waits for more batches.
const LINGER: Duration = Duration::from_micros(500);
/// Queue depth before callers wait (back-pressure instead of memory growth).
const QUEUE: usize = 4096;

/// One atomic change to the store.
#[derive(Debug, Default)]
pub struct Batch {
    /// Blocks to put.
    pub blocks: Vec<(Cid, Vec<u8>)>,
    /// Readings whose parents are linked (or given up on): index them, mark them linked, and
    /// make each a head of its source in place of its parents.
    pub linked: Vec<(Cid, Reading, u64)>,
    /// Readings stored but waiting for their `prev`.
    pub pending: Vec<Cid>,
    /// Index entries to drop, with their blocks (retention).
    pub expire: Vec<(String, u64, Cid)>,
    /// Blocks nobody could supply, linked past.
    pub holes: Vec<Hole>,
    /// Holes no longer open (filled, or past retention).
    pub closed_holes: Vec<Cid>,
}

type Job = (Batch, oneshot::Sender<Result<(), StoreError>>);

/// A queued batch; awaiting it waits for its durable commit.
pub struct Committed(oneshot::Receiver<Result<(), StoreError>>);

impl Committed {
    /// Waits until the batch is durable (or failed).
    pub async fn wait(self) -> Result<(), StoreError> {
        self.0.await.map_err(|_| StoreError::Closed)?
    }
}

#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::SyncSender<Option<Job>>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Writer {
    pub(super) fn spawn(db: Arc<Shared>) -> Writer {
        let (tx, rx) = mpsc::sync_channel::<Option<Job>>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(db, rx))
            .expect("spawning the store writer thread");
        Writer {
            tx,
            thread: Arc::new(Mutex::new(Some(thread))),
        }
    }

    /// Queues a batch behind those already queued; the receiver answers once it is committed.
    pub(super) async fn submit(&self, batch: Batch) -> Result<Committed, StoreError> {
        let (done_tx, done_rx) = oneshot::channel();
        let tx = self.tx.clone();
        // A full queue blocks: do that off the async workers.
        let sent = tokio::task::spawn_blocking(move || tx.send(Some((batch, done_tx))).is_ok())
            .await
            .map_err(|_| StoreError::Closed)?;
        if !sent {
            return Err(StoreError::Closed);
        }
        Ok(Committed(done_rx))
    }

    pub(super) fn shutdown(&self) {
        let _ = self.tx.send(None);
        let thread = self.thread.lock().map(|mut t| t.take()).unwrap_or(None);
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

fn run(shared: Arc<Shared>, rx: mpsc::Receiver<Option<Job>>) {
    let mut needs_reopen = false;
    while let Ok(Some(first)) = rx.recv() {
        let mut group = vec![first];
        let mut stop = false;
        // What is queued joins this commit. Under load (more than one batch waiting) a short
        // wait gathers more: every redb commit copies the pages it touches, so fewer, bigger
        // commits cost less CPU per reading. A lone batch commits at once.
        let mut linger_until: Option<Instant> = None;
        while group.len() < MAX_GROUP {
            let next = match linger_until {
                None => rx.try_recv().ok(),
                Some(until) => until
                    .checked_duration_since(Instant::now())
                    .and_then(|left| rx.recv_timeout(left).ok()),
            };
            match next {
                Some(Some(job)) => group.push(job),
                Some(None) => {
                    stop = true;
                    break;
                }
                None if linger_until.is_none() && group.len() > 1 => {
                    linger_until = Some(Instant::now() + LINGER);
                }
                None => break,
            }
        }
        let db = match if needs_reopen {
            shared.reopen()
        } else {
            shared.get()
        } {
            Ok(db) => db,
            Err(e) => {
                for (_, done) in group {
                    let _ = done.send(Err(e.clone()));
                }
                continue;
            }
        };
        let batches: Vec<&Batch> = group.iter().map(|(b, _)| b).collect();
        let result = commit(&db, &batches);
        drop(db);
        // After an I/O error redb refuses this handle: open a fresh one before the next write.
        needs_reopen = result.as_ref().is_err_and(StoreError::needs_reopen);
        match result {
            Ok(()) => {
                shared.commits.inc();
                for (_, done) in group {
                    let _ = done.send(Ok(()));
                }
            }
            Err(e) => {
                for (_, done) in group {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
        if stop {
            break;
        }
    }
}

fn commit(db: &Database, batches: &[&Batch]) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)
        .map_err(StoreError::db)?;
    {
        let mut blocks = txn.open_table(BLOCKS)?;
        let mut heads = txn.open_table(HEADS)?;
        let mut linked = txn.open_table(LINKED)?;
        let mut by_time = txn.open_table(BY_TIME)?;
        let mut pending = txn.open_table(PENDING)?;
        let mut holes = txn.open_table(HOLES)?;
        let mut children = txn.open_table(CHILDREN)?;
        for b in batches {
            for h in &b.holes {
                holes.insert(
                    h.cid.to_bytes().as_slice(),
                    (h.topic.as_str(), h.source.as_str(), h.before_ms),
                )?;
            }
            for cid in &b.closed_holes {
                holes.remove(cid.to_bytes().as_slice())?;
            }
            for (cid, bytes) in &b.blocks {
                blocks.insert(cid.to_bytes().as_slice(), bytes.as_slice())?;
            }
            for cid in &b.pending {
                pending.insert(cid.to_bytes().as_slice(), ())?;
            }
            for (cid, r, size) in &b.linked {
                let key = cid.to_bytes();
                pending.remove(key.as_slice())?;
                // However it arrived, a linked block is no longer a hole.
                holes.remove(key.as_slice())?;
                linked.insert(key.as_slice(), r.seq)?;
                by_time.insert((r.topic.as_str(), r.time, key.as_slice()), *size)?;
                // Its parents stop being heads; it becomes one unless a linked reading already
                // names it (a hole filled late, below readings linked past it). Only a parent
                // not linked yet needs that mark: a linked one is never linked again. Skipping
                // it spares one random-key insert per reading, and every commit copies each
                // page such an insert touches.
                for p in r.parents() {
                    let p = p.to_bytes();
                    heads.remove((r.topic.as_str(), r.source.as_str(), p.as_slice()))?;
                    if linked.get(p.as_slice())?.is_none() {
                        children.insert(p.as_slice(), ())?;
                    }
                }
                if children.get(key.as_slice())?.is_none() {
                    heads.insert(
                        (r.topic.as_str(), r.source.as_str(), key.as_slice()),
                        (r.seq, r.time),
                    )?;
                }
            }
            let head_cids: std::collections::HashSet<Vec<u8>> = if b.expire.is_empty() {
                Default::default()
            } else {
                heads
                    .iter()?
                    .filter_map(Result::ok)
                    .map(|(k, _)| k.value().2.to_vec())
                    .collect()
            };
            for (topic, time, cid) in &b.expire {
                let key = cid.to_bytes();
                by_time.remove((topic.as_str(), *time, key.as_slice()))?;
                linked.remove(key.as_slice())?;
                children.remove(key.as_slice())?;
                // Heads keep their block so a quiet source still has its place in the chain.
                if !head_cids.contains(&key) {
                    blocks.remove(key.as_slice())?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}
