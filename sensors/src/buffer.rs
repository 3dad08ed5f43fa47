//! A bounded on-disk FIFO of readings (one JSON line each) for a sensor whose node is away.
//! Appends are fsync'd; the consumed count lives in a separate file replaced atomically, so a
//! crash at any point loses nothing that was pushed (a reading may be delivered twice).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Compact the log once this many consumed lines precede the live ones.
const COMPACT_AFTER: usize = 1024;

/// Buffer failures.
#[derive(Debug, thiserror::Error)]
#[error("sensor buffer {path}: {source}; check the directory is writable and the disk not full")]
pub struct BufferError {
    path: String,
    source: std::io::Error,
}

/// The queue.
pub struct DiskQueue {
    dir: PathBuf,
    log: File,
    items: VecDeque<String>,
    consumed: usize,
    max: usize,
    /// Oldest items dropped because the queue was full.
    pub dropped: u64,
}

impl DiskQueue {
    /// Opens (or creates) the queue in `dir`, holding at most `max` items.
    pub fn open(dir: &Path, max: usize) -> Result<DiskQueue, BufferError> {
        let e = |source| BufferError {
            path: dir.display().to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(e)?;
        let log_path = dir.join("queue.jsonl");
        let text = fs::read_to_string(&log_path)
            .or_else(|err| {
                if err.kind() == std::io::ErrorKind::NotFound {
                    Ok(String::new())
                } else {
                    Err(err)
                }
            })
            .map_err(e)?;
        let consumed: usize = fs::read_to_string(dir.join("consumed"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        // A line without its newline was cut by a crash mid-append: it was never acknowledged.
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        let lines: Vec<String> = complete.lines().map(str::to_string).collect();
        let items: VecDeque<String> = lines.iter().skip(consumed).cloned().collect();
        let mut q = DiskQueue {
            dir: dir.to_path_buf(),
            log: OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(e)?,
            items,
            consumed: consumed.min(lines.len()),
            max: max.max(1),
            dropped: 0,
        };
        if complete.len() != text.len() || consumed > 0 {
            q.compact()?;
        }
        Ok(q)
    }

    fn err(&self, source: std::io::Error) -> BufferError {
        BufferError {
            path: self.dir.display().to_string(),
            source,
        }
    }

    /// Appends an item durably; drops the oldest when full.
    pub fn push(&mut self, item: &str) -> Result<(), BufferError> {
        debug_assert!(!item.contains('\n'));
        while self.items.len() >= self.max {
            self.pop()?;
            self.dropped += 1;
        }
        self.log
            .write_all(format!("{item}\n").as_bytes())
            .map_err(|e| self.err(e))?;
        self.log.sync_data().map_err(|e| self.err(e))?;
        self.items.push_back(item.to_string());
        Ok(())
    }

    /// The oldest item.
    pub fn front(&self) -> Option<&str> {
        self.items.front().map(String::as_str)
    }

    /// Number of items waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Removes the oldest item durably.
    pub fn pop(&mut self) -> Result<(), BufferError> {
        if self.items.pop_front().is_none() {
            return Ok(());
        }
        self.consumed += 1;
        if self.consumed >= COMPACT_AFTER || self.items.is_empty() {
            self.compact()
        } else {
            self.write_consumed()
        }
    }

    fn write_consumed(&self) -> Result<(), BufferError> {
        let tmp = self.dir.join("consumed.tmp");
        fs::write(&tmp, self.consumed.to_string()).map_err(|e| self.err(e))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| self.err(e))?;
        fs::rename(&tmp, self.dir.join("consumed")).map_err(|e| self.err(e))
    }

    /// Rewrites the log with only the live items.
    fn compact(&mut self) -> Result<(), BufferError> {
        let tmp = self.dir.join("queue.jsonl.tmp");
        let mut body = String::new();
        for i in &self.items {
            body.push_str(i);
            body.push('\n');
        }
        fs::write(&tmp, body).map_err(|e| self.err(e))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| self.err(e))?;
        // Order matters: a crash between the two leaves consumed=0 with the compacted log.
        self.consumed = 0;
        self.write_consumed()?;
        fs::rename(&tmp, self.dir.join("queue.jsonl")).map_err(|e| self.err(e))?;
        self.log = OpenOptions::new()
            .append(true)
            .open(self.dir.join("queue.jsonl"))
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_reopen_and_enforces_bound() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut q = DiskQueue::open(dir.path(), 1000).unwrap();
            for i in 0..10 {
                q.push(&format!("r{i}")).unwrap();
            }
            q.pop().unwrap();
            q.pop().unwrap();
        }
        let mut q = DiskQueue::open(dir.path(), 1000).unwrap();
        assert_eq!(q.len(), 8);
        assert_eq!(q.front(), Some("r2"));
        for i in 0..2000 {
            q.push(&format!("s{i}")).unwrap();
            if i % 3 == 0 {
                q.pop().unwrap();
            }
        }
        assert_eq!(q.len(), 1000, "bounded");
        assert!(q.dropped > 0);
        let front = q.front().unwrap().to_string();
        drop(q);
        let q = DiskQueue::open(dir.path(), 1000).unwrap();
        assert_eq!(q.front(), Some(front.as_str()));
        assert_eq!(q.len(), 1000);
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("queue.jsonl"), "a\nb\nhalf").unwrap();
        let mut q = DiskQueue::open(dir.path(), 10).unwrap();
        assert_eq!(q.len(), 2);
        q.push("c").unwrap();
        drop(q);
        let q = DiskQueue::open(dir.path(), 10).unwrap();
        assert_eq!(q.items, ["a", "b", "c"]);
    }
}
