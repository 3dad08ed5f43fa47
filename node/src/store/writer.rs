//! The single writer thread: queues batches and commits as many as are waiting in one
//! transaction (group commit), made durable by the write-ahead log ([`super::wal`]) before
//! each caller is answered; a durable redb commit (checkpoint) every second empties the log.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cid::Cid;
use redb::{Database, Durability, ReadableTable};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::wal::Wal;
use super::{
    next_slot, Hole, Shared, StoreError, BLOCK_BYTES, BY_TIME, CHILDREN, CIDS, HEADS, HOLES,
    PENDING,
};
use crate::reading::Reading;

/// Most batches folded into one transaction; bounds the latency of the first caller.
const MAX_GROUP: usize = 256;
/// How long a commit under load waits for more batches.
const LINGER: Duration = Duration::from_micros(500);
/// Queue depth before callers wait (back-pressure instead of memory growth).
const QUEUE: usize = 4096;

/// One atomic change to the store.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Batch {
    /// Blocks to put.
    #[serde(with = "block_list")]
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

/// Blocks as CBOR byte strings in the log (a plain `Vec<u8>` would be a list of integers).
mod block_list {
    use cid::Cid;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[(Cid, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(c, b)| (c, serde_bytes::Bytes::new(b))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(Cid, Vec<u8>)>, D::Error> {
        let v: Vec<(Cid, serde_bytes::ByteBuf)> = Deserialize::deserialize(d)?;
        Ok(v.into_iter().map(|(c, b)| (c, b.into_vec())).collect())
    }
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
    /// The writer of `db`, logging ahead to `wal` (none for an in-memory store: its
    /// commits go straight to redb).
    pub(super) fn spawn(db: Arc<Shared>, wal: Option<Wal>) -> Writer {
        let (tx, rx) = mpsc::sync_channel::<Option<Job>>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(db, wal, rx))
            .expect("spawning the store writer thread");
        Writer {
            tx,
            thread: Arc::new(Mutex::new(Some(thread))),
        }
    }

    /// Queues a batch behind those already queued; the receiver answers once it is committed.
    pub(super) async fn submit(&self, batch: Batch) -> Result<Committed, StoreError> {
        let (done_tx, done_rx) = oneshot::channel();
        let job = match self.tx.try_send(Some((batch, done_tx))) {
            Ok(()) => return Ok(Committed(done_rx)),
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
            Err(mpsc::TrySendError::Full(job)) => job,
        };
        // A full queue blocks: wait for room off the async workers (a thread hand-off costs
        // tens of µs on every write, so only then).
        let tx = self.tx.clone();
        let sent = tokio::task::spawn_blocking(move || tx.send(job).is_ok())
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

fn run(shared: Arc<Shared>, mut wal: Option<Wal>, rx: mpsc::Receiver<Option<Job>>) {
    let mut needs_reopen = false;
    loop {
        // With records in the log, wait no longer than until its checkpoint is due.
        let first = match wal.as_ref().and_then(Wal::due_at) {
            None => rx.recv().ok().flatten(),
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    checkpoint(&shared, &mut wal, &mut needs_reopen);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => None,
            },
        };
        let Some(first) = first else { break };
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
            reopen(&shared, &mut wal)
        } else {
            shared.get()
        } {
            Ok(db) => {
                needs_reopen = false;
                db
            }
            Err(e) => {
                for (_, done) in group {
                    let _ = done.send(Err(e.clone()));
                }
                continue;
            }
        };
        let batches: Vec<&Batch> = group.iter().map(|(b, _)| b).collect();
        let result = apply(&db, wal.as_mut(), &batches);
        drop(db);
        let failed = result.as_ref().is_err_and(StoreError::needs_reopen);
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
        // After an I/O error redb refuses this handle, reads included: open a fresh one now,
        // not at the next write (readers meanwhile hear the store is reopening: a 503 to retry).
        if failed {
            needs_reopen = reopen(&shared, &mut wal).is_err();
        }
        if wal.as_ref().is_some_and(Wal::due) {
            checkpoint(&shared, &mut wal, &mut needs_reopen);
        }
        if stop {
            break;
        }
    }
    checkpoint(&shared, &mut wal, &mut needs_reopen);
}

/// Makes `batches` durable: logged and synced, then applied to redb without a sync of its
/// own; without a log, one durable redb commit.
fn apply(db: &Database, wal: Option<&mut Wal>, batches: &[&Batch]) -> Result<(), StoreError> {
    let Some(wal) = wal else {
        return commit(db, batches, Durability::Immediate);
    };
    let mark = wal.mark();
    wal.write(batches)?;
    // redb applies the group while the record syncs. Should the sync fail, the callers hear
    // so though redb holds the group: a write nobody was promised may survive, none that was
    // acknowledged can be lost.
    let applied = commit(db, batches, Durability::None);
    let synced = wal.wait_synced();
    if applied.is_err() {
        // The callers hear of the failure: the record must not come back at the next open.
        wal.undo_to(mark);
    }
    applied.and(synced)
}

/// A durable redb commit of everything applied so far, after which the log starts again.
/// On failure the log keeps its records and the next attempt waits a checkpoint interval;
/// a handle refused by redb after the failure is replaced at once (with the log applied to
/// the new one), so reads go on seeing every acknowledged write.
fn checkpoint(shared: &Shared, wal: &mut Option<Wal>, needs_reopen: &mut bool) {
    let Some(log) = wal.as_mut() else { return };
    if log.is_empty() || *needs_reopen {
        return;
    }
    match shared.get().and_then(|db| durable_commit(&db)) {
        Ok(()) => log.checkpointed(),
        Err(e) => {
            tracing::warn!(error = %e, "block store checkpoint failed; the write-ahead log keeps every acknowledged write");
            log.retry_later();
            if e.needs_reopen() {
                *needs_reopen = reopen(shared, wal).is_err();
            }
        }
    }
}

/// Makes every earlier non-durable commit durable.
fn durable_commit(db: &Database) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)
        .map_err(StoreError::db)?;
    txn.commit()?;
    Ok(())
}

/// A fresh redb handle after an I/O error, with the log applied to it again: what the old
/// handle held only in non-durable commits is in the log.
fn reopen(shared: &Shared, wal: &mut Option<Wal>) -> Result<Arc<Database>, StoreError> {
    let mut fresh = None;
    let db = shared.reopen(|db| {
        if let (Some(_), Some(path)) = (wal.as_ref(), shared.path.as_deref()) {
            let (log, batches) = Wal::open(path)?;
            replay(db, &batches)?;
            fresh = Some(log);
        }
        Ok(())
    })?;
    if let Some(log) = fresh {
        *wal = Some(log);
    }
    Ok(db)
}

/// Applies the batches a log held at open (those since the last checkpoint), without a
/// sync: they are durable in the log, which the next checkpoint (due a second after the log
/// was opened with records) empties.
pub(super) fn replay(db: &Database, batches: &[Batch]) -> Result<(), StoreError> {
    if batches.is_empty() {
        return Ok(());
    }
    let refs: Vec<&Batch> = batches.iter().collect();
    commit(db, &refs, Durability::None)?;
    tracing::info!(
        batches = batches.len(),
        "block store: applied the write-ahead log's batches since the last checkpoint"
    );
    Ok(())
}

fn commit(db: &Database, batches: &[&Batch], durability: Durability) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(durability).map_err(StoreError::db)?;
    {
        let mut bytes = txn.open_table(BLOCK_BYTES)?;
        let mut cids = txn.open_table(CIDS)?;
        let mut heads = txn.open_table(HEADS)?;
        let mut by_time = txn.open_table(BY_TIME)?;
        let mut pending = txn.open_table(PENDING)?;
        let mut holes = txn.open_table(HOLES)?;
        let mut children = txn.open_table(CHILDREN)?;
        let mut slot = next_slot(&bytes)?;
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
            // A reading linked in the batch that stores it gets its mark with its block: one
            // index insert instead of two.
            let linked_here: std::collections::HashMap<&Cid, u64> =
                b.linked.iter().map(|(cid, r, _)| (cid, r.seq)).collect();
            for (cid, block) in &b.blocks {
                let key = cid.to_bytes();
                // A block already here keeps its slot (a second put, or the log applied again
                // at open).
                if cids.get(key.as_slice())?.is_some() {
                    continue;
                }
                bytes.insert(slot, block.as_slice())?;
                cids.insert(key.as_slice(), (slot, linked_here.get(cid).copied()))?;
                slot += 1;
            }
            for cid in &b.pending {
                pending.insert(cid.to_bytes().as_slice(), ())?;
            }
            for (cid, r, size) in &b.linked {
                let key = cid.to_bytes();
                pending.remove(key.as_slice())?;
                // However it arrived, a linked block is no longer a hole.
                holes.remove(key.as_slice())?;
                let entry = cids.get(key.as_slice())?.map(|v| v.value());
                if let Some((at, None)) = entry {
                    cids.insert(key.as_slice(), (at, Some(r.seq)))?;
                }
                by_time.insert((r.topic.as_str(), r.time, key.as_slice()), *size)?;
                // Its parents stop being heads; it becomes one unless a linked reading already
                // names it (a hole filled late, below readings linked past it). Only a parent
                // not linked yet needs that mark: a linked one is never linked again. Skipping
                // it spares one random-key insert per reading, and every commit copies each
                // page such an insert touches.
                for p in r.parents() {
                    let p = p.to_bytes();
                    heads.remove((r.topic.as_str(), r.source.as_str(), p.as_slice()))?;
                    let parent_linked = cids
                        .get(p.as_slice())?
                        .is_some_and(|v| v.value().1.is_some());
                    if !parent_linked {
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
                children.remove(key.as_slice())?;
                let Some((at, _)) = cids.get(key.as_slice())?.map(|v| v.value()) else {
                    continue;
                };
                // Heads keep their block (no longer linked) so a quiet source still has its
                // place in the chain.
                if head_cids.contains(&key) {
                    cids.insert(key.as_slice(), (at, None))?;
                } else {
                    cids.remove(key.as_slice())?;
                    bytes.remove(at)?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}
