//! The write-ahead log beside the redb file. A durable redb commit copies every B-tree page a
//! batch touches and syncs them (0.5–0.9 ms for ten readings, most of it page writes); one
//! sequential append and `fdatasync` costs ~0.1 ms. So each group of batches is appended here
//! and synced before its callers are answered, then applied to redb in a non-durable commit;
//! a durable redb commit (a checkpoint, every second or few MiB) lets the log start again.
//! At open, whatever the log holds is applied again: the batches since the last checkpoint,
//! in order. Applying a run of batches a second time leaves what applying it once did (every
//! change is an insert or a removal by key), so a crash between a checkpoint and the start of
//! the log's next epoch costs nothing either.
//!
//! The file starts with `SNWAL001` and the current epoch (u64 LE); a record is `[payload
//! length: u32 LE][epoch: u64 LE][first 8 bytes of SHA-256(epoch, payload)][payload]`, the
//! payload a DAG-CBOR list of batches. The file is grown in zero-filled steps and written in
//! place, so syncing a record changes no file metadata (an append that grew the file cost a
//! journal commit per sync, 0.25 ms instead of 0.07 ms here, and the nodes of one machine
//! queued behind each other's). A checkpoint starts a new epoch instead of truncating: the
//! log is the records of the header's epoch from the start, up to the first that is not
//! (zeros, an older epoch's leftovers, or a record cut short by a crash: never synced, so
//! never acknowledged).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{Batch, StoreError};

/// A checkpoint once the log holds this much...
const CHECKPOINT_BYTES: u64 = 8 << 20;
/// ...or its oldest record is this old.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// The file grows by at least this much at a time, zero-filled.
const GROW: u64 = 1 << 20;
/// The file's header: magic and epoch.
const FILE_HEADER: u64 = 16;
const MAGIC: &[u8; 8] = b"SNWAL001";
/// Header of a record: length, epoch and checksum.
const HEADER: usize = 20;

/// The open log.
pub(super) struct Wal {
    file: File,
    path: PathBuf,
    /// End of the whole, synced records (where the next one goes).
    len: u64,
    /// The file's size: zeros from the last record to here.
    allocated: u64,
    /// Records of other epochs are not part of the log.
    epoch: u64,
    /// Length of the record written but not yet known to be synced.
    unsynced: Option<u64>,
    /// When the first record after the last checkpoint was appended.
    oldest: Option<Instant>,
    syncer: Syncer,
}

/// A thread that syncs the log on request, so the writer applies a group to redb while its
/// record's `fdatasync` runs (each takes 0.1–0.3 ms; one after the other doubled the time
/// before a publisher hears back).
struct Syncer {
    ask: mpsc::Sender<()>,
    answer: mpsc::Receiver<std::io::Result<()>>,
}

impl Syncer {
    fn spawn(file: File) -> std::io::Result<Syncer> {
        let (ask, asked) = mpsc::channel::<()>();
        let (answered, answer) = mpsc::channel();
        std::thread::Builder::new()
            .name("store-wal-sync".into())
            .spawn(move || {
                for () in asked {
                    if answered.send(file.sync_data()).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Syncer { ask, answer })
    }

    fn start(&self) -> std::io::Result<()> {
        self.ask
            .send(())
            .map_err(|_| std::io::Error::other("the log's sync thread stopped"))
    }

    fn wait(&self) -> std::io::Result<()> {
        self.answer
            .recv()
            .map_err(|_| std::io::Error::other("the log's sync thread stopped"))?
    }
}

fn checksum(epoch: u64, payload: &[u8]) -> [u8; 8] {
    let digest = Sha256::new()
        .chain_update(epoch.to_le_bytes())
        .chain_update(payload)
        .finalize();
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&digest[..8]);
    sum
}

impl Wal {
    /// The log that goes with the store file at `store`.
    pub(super) fn path_for(store: &Path) -> PathBuf {
        let mut name = store.file_name().unwrap_or_default().to_os_string();
        name.push(".wal");
        store.with_file_name(name)
    }

    /// Opens (or creates) the log and reads the batches of its whole records; a torn tail is
    /// cut off.
    pub(super) fn open(store: &Path) -> Result<(Wal, Vec<Batch>), StoreError> {
        let path = Wal::path_for(store);
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
        if created {
            // The new name must survive a power loss as well as what is written under it.
            if let Some(dir) = path.parent() {
                File::open(dir).and_then(|d| d.sync_all())?;
            }
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (epoch, batches, len) = parse(&bytes).map_err(|detail| StoreError::Damaged {
            path: path.display().to_string(),
            detail,
        })?;
        let syncer = Syncer::spawn(file.try_clone()?)?;
        let mut wal = Wal {
            file,
            path,
            len,
            allocated: bytes.len() as u64,
            epoch,
            unsynced: None,
            oldest: (len > FILE_HEADER).then(Instant::now),
            syncer,
        };
        if bytes.len() < FILE_HEADER as usize {
            wal.grow(0)?;
            wal.write_header()?;
            wal.file.sync_data()?;
        } else if bytes[len as usize..].iter().any(|b| *b != 0) && epoch_at(&bytes, len) == epoch {
            tracing::warn!(
                path = %wal.path.display(),
                at = len,
                "write-ahead log: a record cut short by a crash was dropped (it was never acknowledged)"
            );
            wal.erase_record_at(len)?;
        }
        Ok((wal, batches))
    }

    fn write_header(&self) -> std::io::Result<()> {
        let mut header = [0u8; FILE_HEADER as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..].copy_from_slice(&self.epoch.to_le_bytes());
        self.file.write_all_at(&header, 0)
    }

    /// Zero-fills the file to hold `needed` more bytes after the log's end.
    fn grow(&mut self, needed: u64) -> std::io::Result<()> {
        let want = self.len.max(FILE_HEADER) + needed;
        if want <= self.allocated {
            return Ok(());
        }
        let add = (want - self.allocated).max(GROW);
        let zeros = vec![0u8; add as usize];
        self.file.write_all_at(&zeros, self.allocated)?;
        self.allocated += add;
        Ok(())
    }

    /// Zeros a record's header so it is not read as part of the log, and syncs that.
    fn erase_record_at(&self, at: u64) -> std::io::Result<()> {
        if at + HEADER as u64 > self.allocated {
            return Ok(());
        }
        self.file.write_all_at(&[0u8; HEADER], at)?;
        self.file.sync_data()
    }

    /// Appends one record holding `batches` and syncs it; on failure the log is as before.
    #[cfg(test)]
    pub(super) fn append(&mut self, batches: &[&Batch]) -> Result<(), StoreError> {
        self.write(batches)?;
        self.wait_synced()
    }

    /// Writes one record holding `batches` and starts its sync; [`Self::wait_synced`] says
    /// whether it is durable. On failure the log is as before.
    pub(super) fn write(&mut self, batches: &[&Batch]) -> Result<(), StoreError> {
        let payload = serde_ipld_dagcbor::to_vec(batches).map_err(StoreError::db)?;
        let size = u32::try_from(payload.len())
            .map_err(|_| StoreError::db("a write-ahead log record over 4 GiB"))?;
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&size.to_le_bytes());
        record.extend_from_slice(&self.epoch.to_le_bytes());
        record.extend_from_slice(&checksum(self.epoch, &payload));
        record.extend_from_slice(&payload);
        let written = self
            .grow(record.len() as u64)
            .and_then(|()| self.file.write_all_at(&record, self.len))
            .and_then(|()| self.syncer.start());
        if let Err(e) = written {
            self.undo_to(self.len);
            return Err(e.into());
        }
        self.unsynced = Some(record.len() as u64);
        Ok(())
    }

    /// Waits for the sync [`Self::write`] started; on failure the record is dropped.
    pub(super) fn wait_synced(&mut self) -> Result<(), StoreError> {
        let Some(size) = self.unsynced.take() else {
            return Ok(());
        };
        if let Err(e) = self.syncer.wait() {
            self.undo_to(self.len);
            return Err(e.into());
        }
        self.len += size;
        self.oldest.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Whether the log holds no record.
    pub(super) fn is_empty(&self) -> bool {
        self.len <= FILE_HEADER
    }

    /// Where the log ends now; [`Self::undo_to`] goes back there.
    pub(super) fn mark(&self) -> u64 {
        self.len
    }

    /// Drops the records after `mark` (their batches were not applied, so must not be
    /// replayed). Best effort: a record left behind only if this fails too is one whose
    /// caller was told it failed, and applying it later loses nothing.
    pub(super) fn undo_to(&mut self, mark: u64) {
        if let Err(e) = self.erase_record_at(mark) {
            tracing::warn!(path = %self.path.display(), error = %e, "write-ahead log: could not drop a failed record");
        }
        self.len = mark;
        if self.is_empty() {
            self.oldest = None;
        }
    }

    /// Whether a checkpoint is due.
    pub(super) fn due(&self) -> bool {
        self.len >= FILE_HEADER + CHECKPOINT_BYTES
            || self.oldest.is_some_and(|t| t.elapsed() >= CHECKPOINT_EVERY)
    }

    /// When the next checkpoint is due, if the log holds anything.
    pub(super) fn due_at(&self) -> Option<Instant> {
        self.oldest.map(|t| t + CHECKPOINT_EVERY)
    }

    /// After a failed checkpoint: the next attempt waits an interval.
    pub(super) fn retry_later(&mut self) {
        self.oldest = Some(Instant::now());
    }

    /// After a durable redb commit: the log starts again, in a new epoch. Not synced here:
    /// the next record's sync takes the header with it, and should the new epoch be lost,
    /// the old one's records are applied again at open, which changes nothing.
    pub(super) fn checkpointed(&mut self) {
        self.epoch += 1;
        if let Err(e) = self.write_header() {
            self.epoch -= 1;
            tracing::warn!(path = %self.path.display(), error = %e, "write-ahead log: could not start a new epoch after a checkpoint");
            return;
        }
        self.len = FILE_HEADER;
        self.oldest = None;
    }
}

/// The epoch of the record header at `at`, if one fits.
fn epoch_at(bytes: &[u8], at: u64) -> u64 {
    let at = at as usize;
    bytes
        .get(at + 4..at + 12)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// The log's epoch, the batches of its records and where they end. Parsing stops at the
/// first record that runs past the end, belongs to another epoch or fails its checksum (a
/// torn tail: its write was not synced); a whole, checksummed record of the epoch that does
/// not decode is damage.
fn parse(bytes: &[u8]) -> Result<(u64, Vec<Batch>, u64), String> {
    let Some(header) = bytes.get(..FILE_HEADER as usize) else {
        return Ok((1, Vec::new(), FILE_HEADER));
    };
    if &header[..8] != MAGIC {
        return Err("not a sensornet write-ahead log (bad magic)".into());
    }
    let epoch = u64::from_le_bytes(header[8..].try_into().expect("8 bytes"));
    let mut batches = Vec::new();
    let mut at = FILE_HEADER as usize;
    while bytes.len() - at >= HEADER {
        let size = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if epoch_at(bytes, at as u64) != epoch {
            break;
        }
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + size) else {
            break;
        };
        if checksum(epoch, payload) != bytes[at + 12..at + HEADER] {
            break;
        }
        let group: Vec<Batch> = serde_ipld_dagcbor::from_slice(payload)
            .map_err(|e| format!("write-ahead log record at byte {at}: {e}"))?;
        batches.extend(group);
        at += HEADER + size;
    }
    Ok((epoch, batches, at as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: u8) -> Batch {
        let cid = crate::reading::Reading {
            aqi: None,
            seq: u64::from(n),
            prev: None,
            joins: Vec::new(),
            time: 1_764_000_000_000 + u64::from(n),
            unit: "°C".into(),
            topic: "temperature".into(),
            value: f64::from(n) + 0.5,
            source: "s".into(),
        }
        .encode();
        Batch {
            blocks: vec![(cid.0, cid.1)],
            ..Batch::default()
        }
    }

    fn open(store: &Path) -> (Wal, Vec<Vec<u8>>) {
        let (wal, batches) = Wal::open(store).unwrap();
        (wal, batches.iter().map(|b| b.blocks[0].1.clone()).collect())
    }

    fn blocks(ns: impl IntoIterator<Item = u8>) -> Vec<Vec<u8>> {
        ns.into_iter()
            .map(|n| batch(n).blocks[0].1.clone())
            .collect()
    }

    #[test]
    fn records_come_back_in_order_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("blocks.redb");
        let (mut wal, none) = open(&store);
        assert!(none.is_empty() && wal.is_empty());
        wal.append(&[&batch(1), &batch(2)]).unwrap();
        wal.append(&[&batch(3)]).unwrap();
        let whole = wal.mark();
        wal.append(&[&batch(4)]).unwrap();
        drop(wal);
        // The fourth record cut short, as a crash in the middle of its write leaves it: its
        // last bytes never reached the disk (zeros of the grown file).
        let log = Wal::path_for(&store);
        let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
        f.write_all_at(&[0u8; 8], whole + HEADER as u64 + 2)
            .unwrap();
        let (mut wal, got) = open(&store);
        assert_eq!(got, blocks(1..=3));
        assert_eq!(wal.mark(), whole, "the torn record is not part of the log");
        // Writing on overwrites it; the log reads back whole.
        wal.append(&[&batch(5)]).unwrap();
        drop(wal);
        assert_eq!(open(&store).1, blocks([1, 2, 3, 5]));
    }

    #[test]
    fn a_record_with_a_bad_checksum_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("blocks.redb");
        let (mut wal, _) = open(&store);
        wal.append(&[&batch(1)]).unwrap();
        let first = wal.mark();
        wal.append(&[&batch(2)]).unwrap();
        drop(wal);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(Wal::path_for(&store))
            .unwrap();
        // Flip a byte of the second record's payload: its write did not reach the disk whole.
        f.write_all_at(&[0xff], first + HEADER as u64 + 3).unwrap();
        assert_eq!(open(&store).1, blocks([1]));
    }

    #[test]
    fn undo_and_checkpoint_empty_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("blocks.redb");
        let (mut wal, _) = open(&store);
        assert!(wal.due_at().is_none());
        wal.append(&[&batch(1)]).unwrap();
        assert!(wal.due_at().is_some());
        let mark = wal.mark();
        wal.append(&[&batch(2)]).unwrap();
        wal.undo_to(mark);
        drop(wal);
        let (mut wal, got) = open(&store);
        assert_eq!(got, blocks([1]), "the undone record is gone");
        wal.checkpointed();
        // A record of the new epoch, shorter than the old one it overwrites in part.
        wal.append(&[&batch(3)]).unwrap();
        drop(wal);
        let (mut wal, got) = open(&store);
        assert_eq!(got, blocks([3]), "the old epoch's records are not read");
        wal.checkpointed();
        drop(wal);
        let (wal, got) = open(&store);
        assert!(got.is_empty() && wal.is_empty());
    }
}
