//! The write-ahead log beside the redb file. A durable redb commit copies every B-tree page a
//! batch touches and syncs them (0.5–0.9 ms for ten readings, most of it page writes); one
//! sequential append and `fdatasync` costs ~0.1 ms. So each group of batches is appended here
//! and synced before its callers are answered, then applied to redb in a non-durable commit;
//! a durable redb commit (a checkpoint, every second or few MiB) lets the log start again.
//! At open, whatever the log holds is applied again: the batches since the last checkpoint,
//! in order. Applying a run of batches a second time leaves what applying it once did (every
//! change is an insert or a removal by key), so a crash between a checkpoint and the log's
//! truncation costs nothing either.
//!
//! A record is `[payload length: u32 LE][first 8 bytes of the payload's SHA-256][payload]`,
//! the payload a DAG-CBOR list of batches. A record cut short by a crash (never synced, so
//! never acknowledged) ends the log: it and anything after it are dropped at open.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{Batch, StoreError};

/// A checkpoint once the log holds this much...
const CHECKPOINT_BYTES: u64 = 8 << 20;
/// ...or its oldest record is this old.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Header of a record: length and checksum.
const HEADER: usize = 12;

/// The open log.
pub(super) struct Wal {
    file: File,
    path: PathBuf,
    /// Bytes of whole records (where the next one goes).
    len: u64,
    /// When the first record after the last checkpoint was appended.
    oldest: Option<Instant>,
}

fn checksum(payload: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(payload);
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
        let (batches, len) = parse(&bytes).map_err(|detail| StoreError::Damaged {
            path: path.display().to_string(),
            detail,
        })?;
        if len < bytes.len() as u64 {
            tracing::warn!(
                path = %path.display(),
                kept = len,
                dropped = bytes.len() as u64 - len,
                "write-ahead log: a record cut short by a crash was dropped (it was never acknowledged)"
            );
            file.set_len(len)?;
            file.sync_data()?;
        }
        let wal = Wal {
            file,
            path,
            len,
            oldest: (len > 0).then(Instant::now),
        };
        Ok((wal, batches))
    }

    /// Appends one record holding `batches` and syncs it; on failure the log is as before.
    pub(super) fn append(&mut self, batches: &[&Batch]) -> Result<(), StoreError> {
        let payload = serde_ipld_dagcbor::to_vec(batches).map_err(StoreError::db)?;
        let size = u32::try_from(payload.len())
            .map_err(|_| StoreError::db("a write-ahead log record over 4 GiB"))?;
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&size.to_le_bytes());
        record.extend_from_slice(&checksum(&payload));
        record.extend_from_slice(&payload);
        let written = self
            .file
            .write_all_at(&record, self.len)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            self.undo_to(self.len);
            return Err(e.into());
        }
        self.len += record.len() as u64;
        self.oldest.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Where the log ends now; [`Self::undo_to`] goes back there.
    pub(super) fn mark(&self) -> u64 {
        self.len
    }

    /// Drops the records after `mark` (their batches were not applied, so must not be
    /// replayed). Best effort: a record left behind only if this fails too is one whose
    /// caller was told it failed, and applying it later loses nothing.
    pub(super) fn undo_to(&mut self, mark: u64) {
        if let Err(e) = self.file.set_len(mark).and_then(|()| self.file.sync_data()) {
            tracing::warn!(path = %self.path.display(), error = %e, "write-ahead log: could not drop a failed record");
        }
        self.len = mark;
        if mark == 0 {
            self.oldest = None;
        }
    }

    /// Whether a checkpoint is due.
    pub(super) fn due(&self) -> bool {
        self.len >= CHECKPOINT_BYTES || self.oldest.is_some_and(|t| t.elapsed() >= CHECKPOINT_EVERY)
    }

    /// When the next checkpoint is due, if the log holds anything.
    pub(super) fn due_at(&self) -> Option<Instant> {
        self.oldest.map(|t| t + CHECKPOINT_EVERY)
    }

    /// After a failed checkpoint: the next attempt waits an interval.
    pub(super) fn retry_later(&mut self) {
        self.oldest = Some(Instant::now());
    }

    /// After a durable redb commit: the log starts again. Not synced: should the truncation
    /// be lost, the records are applied again at open, which changes nothing.
    pub(super) fn checkpointed(&mut self) {
        if let Err(e) = self.file.set_len(0) {
            tracing::warn!(path = %self.path.display(), error = %e, "write-ahead log: could not truncate after a checkpoint");
            return;
        }
        self.len = 0;
        self.oldest = None;
    }
}

/// The batches of the whole records at the start of `bytes`, and where those records end. A
/// record whose length runs past the end or whose checksum fails is a torn tail (its write
/// was not synced); a whole, checksummed record that does not decode is damage.
fn parse(bytes: &[u8]) -> Result<(Vec<Batch>, u64), String> {
    let mut batches = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= HEADER {
        let size = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + size) else {
            break;
        };
        if checksum(payload) != bytes[at + 4..at + HEADER] {
            break;
        }
        let group: Vec<Batch> = serde_ipld_dagcbor::from_slice(payload)
            .map_err(|e| format!("write-ahead log record at byte {at}: {e}"))?;
        batches.extend(group);
        at += HEADER + size;
    }
    Ok((batches, at as u64))
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

    #[test]
    fn records_come_back_in_order_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("blocks.redb");
        let (mut wal, none) = Wal::open(&store).unwrap();
        assert!(none.is_empty());
        wal.append(&[&batch(1), &batch(2)]).unwrap();
        wal.append(&[&batch(3)]).unwrap();
        let whole = wal.mark();
        // A third record cut short, as a crash in the middle of its write leaves it.
        wal.append(&[&batch(4)]).unwrap();
        drop(wal);
        let log = Wal::path_for(&store);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(whole + 20)
            .unwrap();
        let (wal, batches) = Wal::open(&store).unwrap();
        let firsts: Vec<Vec<u8>> = batches.iter().map(|b| b.blocks[0].1.clone()).collect();
        let want: Vec<Vec<u8>> = (1..=3).map(|n| batch(n).blocks[0].1.clone()).collect();
        assert_eq!(firsts, want);
        assert_eq!(wal.mark(), whole, "the torn record is cut off");
        assert_eq!(std::fs::metadata(&log).unwrap().len(), whole);
    }

    #[test]
    fn a_record_with_a_bad_checksum_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("blocks.redb");
        let (mut wal, _) = Wal::open(&store).unwrap();
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
        let (_, batches) = Wal::open(&store).unwrap();
        assert_eq!(batches.len(), 1);
    }

    #[test]
    fn undo_and_checkpoint_empty_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("blocks.redb");
        let (mut wal, _) = Wal::open(&store).unwrap();
        assert!(wal.due_at().is_none());
        wal.append(&[&batch(1)]).unwrap();
        assert!(wal.due_at().is_some());
        let mark = wal.mark();
        wal.append(&[&batch(2)]).unwrap();
        wal.undo_to(mark);
        drop(wal);
        let (mut wal, batches) = Wal::open(&store).unwrap();
        assert_eq!(batches.len(), 1, "the undone record is gone");
        wal.checkpointed();
        drop(wal);
        let (wal, batches) = Wal::open(&store).unwrap();
        assert!(batches.is_empty());
        assert_eq!(wal.mark(), 0);
    }
}
