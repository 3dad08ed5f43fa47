//! The block store on redb: blocks by CID, the linked head of each source, an index by topic
//! and time, and retention. Writes go through one writer thread that commits in groups, so
//! every acknowledged write is durable yet concurrent publishers share each fsync.

mod wal;
mod writer;

use std::path::Path;
use std::sync::Arc;

use cid::Cid;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
};

use crate::reading::Reading;
pub use writer::{Batch, Committed};

/// A block missing below a linked reading.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hole {
    /// The missing block.
    pub cid: Cid,
    /// Its source's topic.
    pub topic: String,
    /// Its source.
    pub source: String,
    /// Time of the reading that links to it (unix ms): the hole is older.
    pub before_ms: u64,
}

/// Why a chain walk ([`Store::chain`]) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkEnd {
    /// At `stop_seq`, the horizon or the first reading: nothing more to send.
    Done,
    /// `max` blocks were taken; the chain may go on.
    Limit,
    /// The next block is not here (or does not decode).
    Missing,
}

/// A chain walk's blocks, newest first, and where it ended.
#[derive(Debug)]
pub struct Walk {
    /// Block bytes, newest first.
    pub blocks: Vec<Vec<u8>>,
    /// Why the walk stopped after them.
    pub end: WalkEnd,
}

/// Slot → block bytes (any block: readings, `block/put`, `dag/put`). Slots are handed out in
/// write order, so a commit's new blocks land together at the end of the tree. Keyed by CID
/// (a hash), every block was an insert at a random place that made the commit copy a whole
/// page: with a few hundred thousand readings stored, that and the linked mark below were
/// half of the writer's time per reading (`store-commit`: 38 µs at 400,000 readings, 20 µs
/// with blocks in write order).
const BLOCK_BYTES: TableDefinition<u64, &[u8]> = TableDefinition::new("block_bytes");
/// CID bytes → (slot in [`BLOCK_BYTES`], seq if linked): every block here, and for readings
/// whose chain back to the first reading (or the retention horizon) is in the store, their
/// seq; only those are delivered and listed. One random-key insert per block.
const CIDS: TableDefinition<&[u8], (u64, Option<u64>)> = TableDefinition::new("cids");
/// The layout before [`CIDS`]: blocks and the linked marks keyed by CID; migrated at open.
const OLD_BLOCKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blocks");
const OLD_LINKED: TableDefinition<&[u8], u64> = TableDefinition::new("linked");
/// (topic, source, CID bytes) → (seq, time ms): the heads of each source, the linked
/// readings no linked reading names as a parent. One per source while it has one writer;
/// several while concurrent readings wait to be joined.
const HEADS: TableDefinition<(&str, &str, &[u8]), (u64, u64)> =
    TableDefinition::new("source_heads");
/// The single head per source of stores written before the Merkle clock; migrated at open.
const OLD_HEADS: TableDefinition<(&str, &str), (u64, &[u8])> = TableDefinition::new("heads");
/// Parent CID bytes → (): readings some linked reading named as a parent before they were
/// linked themselves (linked past a hole), so they never become heads when they arrive.
const CHILDREN: TableDefinition<&[u8], ()> = TableDefinition::new("has_children");
/// (topic, time ms, CID bytes) → block size: the history index.
const BY_TIME: TableDefinition<(&str, u64, &[u8]), u64> = TableDefinition::new("by_time");
/// CID bytes → () for readings stored but still waiting for their `prev`.
const PENDING: TableDefinition<&[u8], ()> = TableDefinition::new("pending");
/// CID bytes of a block no peer could supply when its child was linked past it →
/// (topic, source, the child's time ms): holes, re-asked for by the repair sweep.
const HOLES: TableDefinition<&[u8], (&str, &str, u64)> = TableDefinition::new("holes");

/// Store failures; each message says what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the block store at {path} is damaged ({detail}); move it aside and restart: the node refetches what its peers hold")]
    Damaged { path: String, detail: String },
    #[error("cannot open the block store at {path}: {detail}")]
    Open { path: String, detail: String },
    #[error("the disk holding the block store is full; free space or raise retention limits (nothing was acknowledged)")]
    DiskFull,
    #[error("the disk holding the block store failed ({0}); nothing was acknowledged, the store reopens for the next write")]
    Io(String),
    #[error("block store error: {0}")]
    Db(String),
    #[error("the block store is shutting down")]
    Closed,
    #[error("the block store is reopening after a disk error; retry shortly")]
    Reopening,
}

impl StoreError {
    /// A database error that is not about storage (a bug or a misuse): shown as it is.
    fn db(e: impl std::fmt::Display) -> Self {
        StoreError::Db(e.to_string())
    }

    /// Whether the handle must be reopened before the next write (redb refuses a handle that
    /// saw an I/O error).
    pub fn needs_reopen(&self) -> bool {
        matches!(
            self,
            StoreError::DiskFull | StoreError::Io(_) | StoreError::Db(_) | StoreError::Reopening
        )
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28) {
            StoreError::DiskFull
        } else {
            StoreError::Io(e.to_string())
        }
    }
}

impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        match e {
            redb::StorageError::Io(io) => io.into(),
            // The handle saw an I/O error (or was closed for it): the writer is replacing it.
            redb::StorageError::PreviousIo | redb::StorageError::DatabaseClosed => {
                StoreError::Reopening
            }
            other => StoreError::db(other),
        }
    }
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        match e {
            redb::TransactionError::Storage(s) => s.into(),
            other => StoreError::db(other),
        }
    }
}

impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        match e {
            redb::TableError::Storage(s) => s.into(),
            other => StoreError::db(other),
        }
    }
}

impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        match e {
            redb::CommitError::Storage(s) => s.into(),
            other => StoreError::db(other),
        }
    }
}

/// A head of one source's history.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    /// Canonical topic.
    pub topic: String,
    /// Sensor id.
    pub source: String,
    /// Height (seq) of the head reading.
    pub seq: u64,
    /// Its time (unix ms).
    pub time: u64,
    /// CID of the head reading.
    pub cid: Cid,
}

impl Head {
    /// History order: (seq, time, CID); the greatest head is the one a new reading follows.
    pub fn order_key(&self) -> (u64, u64, Vec<u8>) {
        (self.seq, self.time, self.cid.to_bytes())
    }
}

/// A stored reading with its CID.
#[derive(Debug, Clone)]
pub struct StoredReading {
    /// CID of the block.
    pub cid: Cid,
    /// The decoded reading.
    pub reading: Reading,
}

/// Counters for the metrics gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    /// Number of blocks.
    pub blocks: u64,
    /// Bytes of indexed readings.
    pub bytes: u64,
}

/// The open database, swapped for a fresh handle after an I/O error (redb refuses further
/// writes on a handle that saw one, e.g. a full disk).
pub(crate) struct Shared {
    /// The file, or `None` for an in-memory store (tests), which cannot be reopened.
    path: Option<std::path::PathBuf>,
    db: std::sync::RwLock<Option<Arc<Database>>>,
    /// Durable write transactions (`sensornet_store_commits_total`): readings per commit
    /// shows how well concurrent writes are folded together.
    commits: prometheus_client::metrics::counter::Counter,
}

/// A read transaction and the handle it reads, kept alive together: a reopen waits for the
/// handle's last holder, so it never closes the file under a read still running.
struct Snapshot {
    // Declared first: dropped before the handle.
    txn: redb::ReadTransaction,
    _db: Arc<Database>,
}

impl std::ops::Deref for Snapshot {
    type Target = redb::ReadTransaction;

    fn deref(&self) -> &redb::ReadTransaction {
        &self.txn
    }
}

impl Shared {
    fn get(&self) -> Result<Arc<Database>, StoreError> {
        let guard = self.db.read().unwrap_or_else(|e| e.into_inner());
        guard.clone().ok_or(StoreError::Reopening)
    }

    /// A read transaction on the current handle.
    fn read(&self) -> Result<Snapshot, StoreError> {
        let db = self.get()?;
        Ok(Snapshot {
            txn: db.begin_read()?,
            _db: db,
        })
    }

    /// Drops the handle (once no reader holds it), opens the file again and runs `prepare` on
    /// the new handle (the write-ahead log applied again) before readers get it: they wait for
    /// the lock meanwhile instead of reading a store without the log's batches. Should
    /// `prepare` fail, the new handle serves reads all the same and the error is returned.
    fn reopen(
        &self,
        prepare: impl FnOnce(&Database) -> Result<(), StoreError>,
    ) -> Result<Arc<Database>, StoreError> {
        let Some(path) = &self.path else {
            return self.get();
        };
        let mut guard = self.db.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = guard.take() {
            // Readers clone the Arc under the read lock; wait for the last one to finish.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            drop(old);
        }
        let db = Arc::new(open_db(path)?);
        let prepared = prepare(&db);
        *guard = Some(db.clone());
        tracing::info!(path = %path.display(), "block store reopened after a disk error");
        prepared.map(|()| db)
    }
}

fn open_db(path: &Path) -> Result<Database, StoreError> {
    let shown = path.display().to_string();
    Database::builder().create(path).map_err(|e| match e {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
            StoreError::Damaged {
                path: shown.clone(),
                detail,
            }
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() != std::io::ErrorKind::InvalidData =>
        {
            if io.raw_os_error() == Some(28) {
                StoreError::DiskFull
            } else {
                StoreError::Open {
                    path: shown.clone(),
                    detail: io.to_string(),
                }
            }
        }
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Open {
            path: shown.clone(),
            detail: "another process (a running `node daemon`?) has it open; stop it first".into(),
        },
        other => StoreError::Damaged {
            path: shown.clone(),
            detail: other.to_string(),
        },
    })
}

/// A row of the heads table as a [`Head`] (none if the key holds no valid CID).
fn head_row((topic, source, cid): (&str, &str, &[u8]), (seq, time): (u64, u64)) -> Option<Head> {
    Some(Head {
        topic: topic.to_string(),
        source: source.to_string(),
        seq,
        time,
        cid: Cid::try_from(cid).ok()?,
    })
}

/// The bytes of the block whose CID bytes are `cid`, through the CID index.
fn read_block(
    cids: &impl ReadableTable<&'static [u8], (u64, Option<u64>)>,
    bytes: &impl ReadableTable<u64, &'static [u8]>,
    cid: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(slot) = cids.get(cid)?.map(|v| v.value().0) else {
        return Ok(None);
    };
    Ok(bytes.get(slot)?.map(|v| v.value().to_vec()))
}

/// Whether the store has a table of this name (one of an older layout, to migrate).
fn has_table(txn: &redb::WriteTransaction, table: impl TableHandle) -> Result<bool, StoreError> {
    Ok(txn
        .list_tables()
        .map_err(StoreError::db)?
        .any(|t| t.name() == table.name()))
}

/// Moves a store whose blocks are keyed by CID ([`OLD_BLOCKS`], [`OLD_LINKED`]) to slots in
/// write order and the CID index, in the open's transaction: a crash leaves the old layout.
fn migrate_cid_keyed_blocks(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    if !has_table(txn, OLD_BLOCKS)? {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut moved = 0u64;
    {
        let old = txn.open_table(OLD_BLOCKS)?;
        let old_linked = txn.open_table(OLD_LINKED)?;
        let mut cids = txn.open_table(CIDS)?;
        let mut bytes = txn.open_table(BLOCK_BYTES)?;
        let first = next_slot(&bytes)?;
        for (slot, entry) in (first..).zip(old.iter()?) {
            let (cid, block) = entry?;
            let linked = old_linked.get(cid.value())?.map(|v| v.value());
            bytes.insert(slot, block.value())?;
            cids.insert(cid.value(), (slot, linked))?;
            moved += 1;
            if moved % 100_000 == 0 {
                tracing::info!(
                    blocks = moved,
                    "store: moving blocks to the write-order layout"
                );
            }
        }
    }
    txn.delete_table(OLD_BLOCKS).map_err(StoreError::db)?;
    txn.delete_table(OLD_LINKED).map_err(StoreError::db)?;
    tracing::info!(
        blocks = moved,
        secs = started.elapsed().as_secs_f64(),
        "store: blocks moved to the write-order layout"
    );
    Ok(())
}

/// The slot the next new block takes: one past the last.
fn next_slot(bytes: &impl ReadableTable<u64, &'static [u8]>) -> Result<u64, StoreError> {
    Ok(bytes.last()?.map_or(0, |(k, _)| k.value() + 1))
}

/// Moves the single head per source of an older store into the heads table.
fn migrate_old_heads(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    if !has_table(txn, OLD_HEADS)? {
        return Ok(());
    }
    let mut rows = Vec::new();
    {
        let old = txn.open_table(OLD_HEADS)?;
        let cids = txn.open_table(CIDS)?;
        let bytes = txn.open_table(BLOCK_BYTES)?;
        for entry in old.iter()? {
            let (k, v) = entry?;
            let (topic, source) = k.value();
            let (seq, cid) = v.value();
            let time = read_block(&cids, &bytes, cid)?
                .and_then(|b| Reading::decode(&b).ok())
                .map_or(0, |r| r.time);
            rows.push((
                topic.to_string(),
                source.to_string(),
                cid.to_vec(),
                seq,
                time,
            ));
        }
    }
    let mut heads = txn.open_table(HEADS)?;
    for (topic, source, cid, seq, time) in &rows {
        heads.insert(
            (topic.as_str(), source.as_str(), cid.as_slice()),
            (*seq, *time),
        )?;
    }
    drop(heads);
    txn.delete_table(OLD_HEADS).map_err(StoreError::db)?;
    tracing::info!(
        sources = rows.len(),
        "store: heads moved to the Merkle-clock table"
    );
    Ok(())
}

/// Handle to the block store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    writer: writer::Writer,
}

impl Store {
    /// Opens (or creates) the store file, checking it is intact.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::with_db(open_db(path)?, Some(path.to_path_buf()))
    }

    /// A store that lives in memory only (unit tests; nothing survives the process).
    pub fn in_memory() -> Result<Store, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(StoreError::db)?;
        Store::with_db(db, None)
    }

    fn with_db(db: Database, path: Option<std::path::PathBuf>) -> Result<Store, StoreError> {
        let txn = db.begin_write()?;
        {
            txn.open_table(BLOCK_BYTES)?;
            txn.open_table(CIDS)?;
            txn.open_table(HEADS)?;
            txn.open_table(BY_TIME)?;
            txn.open_table(PENDING)?;
            txn.open_table(HOLES)?;
            txn.open_table(CHILDREN)?;
            migrate_cid_keyed_blocks(&txn)?;
            migrate_old_heads(&txn)?;
        }
        txn.commit()?;
        let shared = Arc::new(Shared {
            path,
            db: std::sync::RwLock::new(Some(Arc::new(db))),
            commits: Default::default(),
        });
        let wal = match &shared.path {
            Some(path) => {
                // The writer's first checkpoint (a second from now) empties the log.
                let (wal, batches) = wal::Wal::open(path)?;
                writer::replay(&*shared.get()?, &batches)?;
                Some(wal)
            }
            None => None,
        };
        let writer = writer::Writer::spawn(shared.clone(), wal);
        Ok(Store { shared, writer })
    }

    /// Counts the writer's durable commits (shares its count: register it as a metric).
    pub fn commits(&self) -> prometheus_client::metrics::counter::Counter {
        self.shared.commits.clone()
    }

    /// Applies a batch durably; returns once it is on disk.
    pub async fn write(&self, batch: Batch) -> Result<(), StoreError> {
        self.writer.submit(batch).await?.wait().await
    }

    /// Queues a batch and returns without waiting for the commit: batches commit in the
    /// order they were queued.
    pub async fn submit(&self, batch: Batch) -> Result<Committed, StoreError> {
        self.writer.submit(batch).await
    }

    /// Stops the writer after the queued batches are committed, and waits for it.
    pub fn shutdown(&self) {
        self.writer.shutdown();
    }

    /// The bytes of a block, if present.
    pub fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.shared.read()?;
        read_block(
            &txn.open_table(CIDS)?,
            &txn.open_table(BLOCK_BYTES)?,
            &cid.to_bytes(),
        )
    }

    /// Whether a block is present.
    pub fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        let txn = self.shared.read()?;
        let t = txn.open_table(CIDS)?;
        Ok(t.get(cid.to_bytes().as_slice())?.is_some())
    }

    /// Whether a reading's chain is complete in this store.
    pub fn is_linked(&self, cid: &Cid) -> Result<bool, StoreError> {
        let txn = self.shared.read()?;
        let t = txn.open_table(CIDS)?;
        Ok(t.get(cid.to_bytes().as_slice())?
            .is_some_and(|v| v.value().1.is_some()))
    }

    /// The heads of one source, greatest first (see [`Head::order_key`]).
    pub fn heads_of(&self, topic: &str, source: &str) -> Result<Vec<Head>, StoreError> {
        let txn = self.shared.read()?;
        let t = txn.open_table(HEADS)?;
        let start: (&str, &str, &[u8]) = (topic, source, &[]);
        let end: (&str, &str, &[u8]) = (topic, source, &[0xff; 80]);
        let mut out = Vec::new();
        for entry in t.range(start..=end)? {
            let (k, v) = entry?;
            out.extend(head_row(k.value(), v.value()));
        }
        out.sort_by_key(|h| std::cmp::Reverse(h.order_key()));
        Ok(out)
    }

    /// The greatest head of one source (the one a new reading follows).
    pub fn head(&self, topic: &str, source: &str) -> Result<Option<Head>, StoreError> {
        Ok(self.heads_of(topic, source)?.into_iter().next())
    }

    /// Heads of every source on the given topics (all topics when empty), by topic, source
    /// and CID.
    pub fn heads(&self, topics: &[String]) -> Result<Vec<Head>, StoreError> {
        let txn = self.shared.read()?;
        let t = txn.open_table(HEADS)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            let key = k.value();
            if !topics.is_empty() && !topics.iter().any(|x| x == key.0) {
                continue;
            }
            out.extend(head_row(key, v.value()));
        }
        Ok(out)
    }

    /// Linked readings of a topic with `time >= since_ms`, oldest first, at most `limit`.
    pub fn history(
        &self,
        topic: &str,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<StoredReading>, StoreError> {
        self.history_page(topic, since_ms, u64::MAX, None, limit)
    }

    /// One page of a topic's readings with `since_ms <= time < until_ms`, in (time, CID)
    /// order, at most `limit`; `after` is the (time, CID bytes) of the previous page's last
    /// reading, so a long history is read in pages without holding one transaction open.
    pub fn history_page(
        &self,
        topic: &str,
        since_ms: u64,
        until_ms: u64,
        after: Option<(u64, &[u8])>,
        limit: usize,
    ) -> Result<Vec<StoredReading>, StoreError> {
        use std::ops::Bound;
        let txn = self.shared.read()?;
        let idx = txn.open_table(BY_TIME)?;
        let cids = txn.open_table(CIDS)?;
        let bytes = txn.open_table(BLOCK_BYTES)?;
        let mut out = Vec::new();
        let start: Bound<(&str, u64, &[u8])> = match after {
            Some((t, c)) if t >= since_ms => Bound::Excluded((topic, t, c)),
            _ => Bound::Included((topic, since_ms, &[])),
        };
        let end: Bound<(&str, u64, &[u8])> = if until_ms == u64::MAX {
            Bound::Included((topic, u64::MAX, &[0xff; 64]))
        } else {
            Bound::Excluded((topic, until_ms, &[]))
        };
        for entry in idx.range::<(&str, u64, &[u8])>((start, end))? {
            if out.len() >= limit {
                break;
            }
            let (k, _) = entry?;
            let (_, _, cid_bytes) = k.value();
            let (Ok(cid), Some(block)) = (
                Cid::try_from(cid_bytes),
                read_block(&cids, &bytes, cid_bytes)?,
            ) else {
                continue;
            };
            if let Ok(reading) = Reading::decode(&block) {
                out.push(StoredReading { cid, reading });
            }
        }
        Ok(out)
    }

    /// Walks a chain from `from` back through `prev`: block bytes newest first, and why the
    /// walk ended. Stops at `stop_seq`, `min_time`, the first reading, a missing block or
    /// `max` blocks.
    ///
    /// One read transaction decides both: a block committed between two separate reads made
    /// "nothing from `from`" look like "the walk ended at the horizon", and the asker linked
    /// a child past a parent it never got (seen in `chaos_spread_writers`).
    pub fn chain(
        &self,
        from: &Cid,
        stop_seq: u64,
        min_time: u64,
        max: usize,
    ) -> Result<Walk, StoreError> {
        let txn = self.shared.read()?;
        let cids = txn.open_table(CIDS)?;
        let bytes = txn.open_table(BLOCK_BYTES)?;
        let mut out = Vec::new();
        let mut next = *from;
        let end = loop {
            if out.len() >= max {
                break WalkEnd::Limit;
            }
            let Some(block) = read_block(&cids, &bytes, &next.to_bytes())? else {
                break WalkEnd::Missing;
            };
            let Ok(r) = Reading::decode(&block) else {
                break WalkEnd::Missing;
            };
            if r.seq <= stop_seq || r.time < min_time {
                break WalkEnd::Done;
            }
            out.push(block);
            match r.prev {
                Some(p) => next = p,
                None => break WalkEnd::Done,
            }
        };
        Ok(Walk { blocks: out, end })
    }

    /// Readings stored but not yet linked (to resume their catch-up after a restart).
    pub fn pending(&self) -> Result<Vec<StoredReading>, StoreError> {
        let txn = self.shared.read()?;
        let pending = txn.open_table(PENDING)?;
        let cids = txn.open_table(CIDS)?;
        let bytes = txn.open_table(BLOCK_BYTES)?;
        let mut out = Vec::new();
        for entry in pending.iter()? {
            let (k, _) = entry?;
            let (Ok(cid), Some(block)) = (
                Cid::try_from(k.value()),
                read_block(&cids, &bytes, k.value())?,
            ) else {
                continue;
            };
            if let Ok(reading) = Reading::decode(&block) {
                out.push(StoredReading { cid, reading });
            }
        }
        Ok(out)
    }

    /// Up to `limit` holes, in CID order.
    pub fn holes(&self, limit: usize) -> Result<Vec<Hole>, StoreError> {
        let txn = self.shared.read()?;
        let t = txn.open_table(HOLES)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry?;
            let (topic, source, before_ms) = v.value();
            if let Ok(cid) = Cid::try_from(k.value()) {
                out.push(Hole {
                    cid,
                    topic: topic.to_string(),
                    source: source.to_string(),
                    before_ms,
                });
            }
        }
        Ok(out)
    }

    /// Holes per (topic, source).
    pub fn hole_counts(
        &self,
    ) -> Result<std::collections::HashMap<(String, String), u64>, StoreError> {
        let txn = self.shared.read()?;
        let t = txn.open_table(HOLES)?;
        let mut out = std::collections::HashMap::new();
        for entry in t.iter()? {
            let (_, v) = entry?;
            let (topic, source, _) = v.value();
            *out.entry((topic.to_string(), source.to_string()))
                .or_insert(0) += 1;
        }
        Ok(out)
    }

    /// Number of holes.
    pub fn hole_count(&self) -> Result<u64, StoreError> {
        let txn = self.shared.read()?;
        Ok(txn.open_table(HOLES)?.len()?)
    }

    /// Block count and indexed bytes.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let txn = self.shared.read()?;
        let blocks = txn.open_table(CIDS)?.len()?;
        let stats = txn.open_table(BY_TIME)?.stats()?;
        Ok(StoreStats {
            blocks,
            bytes: stats.stored_bytes(),
        })
    }

    /// Index entries of a topic older than `before_ms` (for retention), oldest first.
    pub fn expired(
        &self,
        topic: &str,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Cid)>, StoreError> {
        let txn = self.shared.read()?;
        let idx = txn.open_table(BY_TIME)?;
        let start: (&str, u64, &[u8]) = (topic, 0, &[]);
        let end: (&str, u64, &[u8]) = (topic, before_ms, &[]);
        let mut out = Vec::new();
        for entry in idx.range(start..end)? {
            if out.len() >= limit {
                break;
            }
            let (k, _) = entry?;
            let (_, time, cid) = k.value();
            if let Ok(cid) = Cid::try_from(cid) {
                out.push((time, cid));
            }
        }
        Ok(out)
    }

    /// Bytes of a topic's indexed readings.
    pub fn topic_bytes(&self, topic: &str) -> Result<u64, StoreError> {
        let txn = self.shared.read()?;
        let idx = txn.open_table(BY_TIME)?;
        let start: (&str, u64, &[u8]) = (topic, 0, &[]);
        let end: (&str, u64, &[u8]) = (topic, u64::MAX, &[0xff; 64]);
        let mut total = 0;
        for entry in idx.range(start..=end)? {
            total += entry?.1.value();
        }
        Ok(total)
    }

    /// Topics present in the history index.
    pub fn topics(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .heads(&[])?
            .into_iter()
            .map(|h| h.topic)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
pub(crate) mod tests;
