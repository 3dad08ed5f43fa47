//! A bounded, durable FIFO of text items (the standalone sensor's readings while its node is
//! away), kept in a directory:
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: append-only segment files, one item per line, each fsync'd
//!   before `push` returns; a new segment starts every `segment_len` items, and a segment is
//!   deleted once every item in it has been taken;
//! - `cursor`: which segment and line the queue starts at, a fixed-size checksummed record
//!   rewritten in place (never longer than one disk sector, so never half-written);
//! - `lock`: flock'ed while open, so two sensors cannot share a buffer.
//!
//! Nothing is ever rewritten, so a crash at any point loses no pushed item; at worst (a cursor
//! update lost) an item is delivered twice. When full, `push` drops the oldest items and
//! counts them.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Items per segment file by default: small enough to hold one segment in memory, large
/// enough that segment turnover is rare.
pub const SEGMENT_LEN: usize = 4096;

/// Why the buffer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// A file operation failed.
    #[error("sensor buffer {path}: {source}; check that the directory is writable and the disk not full")]
    Io {
        /// The file or directory.
        path: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// Another process has the buffer open.
    #[error(
        "sensor buffer {path} is in use by another process; give each sensor its own --buffer-dir"
    )]
    Locked {
        /// The directory.
        path: String,
    },
    /// Items are lines, so they cannot contain line breaks.
    #[error("a buffered item cannot contain a line break; encode it (as JSON does) first")]
    LineBreak,
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    id: u64,
    /// Complete lines in the file.
    lines: usize,
}

/// The queue.
#[derive(Debug)]
pub struct DiskBuffer {
    dir: PathBuf,
    max: usize,
    segment_len: usize,
    segments: VecDeque<Segment>,
    /// Lines of the first segment already taken.
    skip: usize,
    /// The untaken items of the first segment, in order.
    head: VecDeque<String>,
    /// The last segment, open for appends.
    tail: Option<File>,
    /// The id the next segment gets when none is open.
    next_id: u64,
    cursor: File,
    len: usize,
    removed: u64,
    dropped: u64,
    _lock: Flock<File>,
}

fn seg_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// FNV-1a, to tell a whole cursor record from a torn or foreign one.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn cursor_record(seg: u64, skip: usize) -> String {
    let body = format!("{seg:020} {skip:020}");
    format!("{body} {:016x}\n", fnv(body.as_bytes()))
}

fn parse_cursor(text: &str) -> Option<(u64, usize)> {
    let (body, sum) = text.trim_end().rsplit_once(' ')?;
    if u64::from_str_radix(sum, 16).ok()? != fnv(body.as_bytes()) {
        return None;
    }
    let (seg, skip) = body.split_once(' ')?;
    Some((seg.parse().ok()?, skip.parse().ok()?))
}

impl DiskBuffer {
    /// Opens (or creates) the buffer in `dir`, holding at most `max` items.
    pub fn open(dir: &Path, max: usize) -> Result<DiskBuffer, BufferError> {
        DiskBuffer::open_with_segment_len(dir, max, SEGMENT_LEN)
    }

    /// As `open`, with `segment_len` items per segment file (tests use small ones).
    pub fn open_with_segment_len(
        dir: &Path,
        max: usize,
        segment_len: usize,
    ) -> Result<DiskBuffer, BufferError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| BufferError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|_| {
            BufferError::Locked {
                path: dir.display().to_string(),
            }
        })?;

        let mut ids: Vec<u64> = fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        ids.sort_unstable();

        let cursor_path = dir.join("cursor");
        let mut cursor = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&cursor_path)
            .map_err(io(&cursor_path))?;
        let mut text = String::new();
        // A torn or garbled cursor only means replaying from the oldest segment's start.
        let saved = cursor
            .read_to_string(&mut text)
            .ok()
            .and_then(|_| parse_cursor(&text));
        let (start_id, mut skip) = saved.unwrap_or((ids.first().copied().unwrap_or(0), 0));

        // Segments before the cursor were consumed; a crash kept them from being deleted.
        for id in ids.iter().filter(|id| **id < start_id) {
            let p = dir.join(seg_name(*id));
            fs::remove_file(&p).map_err(io(&p))?;
        }
        ids.retain(|id| *id >= start_id);
        if ids.first() != Some(&start_id) {
            skip = 0;
        }

        let mut segments = VecDeque::new();
        let last = ids.last().copied();
        for id in ids {
            let p = dir.join(seg_name(id));
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .map_err(io(&p))?;
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).map_err(io(&p))?;
            let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            if complete < bytes.len() && Some(id) == last {
                // A line without its newline was cut by a crash mid-append: it was never
                // acknowledged. Cut it so the next append starts on a fresh line.
                f.set_len(complete as u64).map_err(io(&p))?;
                f.sync_all().map_err(io(&p))?;
            }
            let lines = bytes[..complete].iter().filter(|b| **b == b'\n').count();
            segments.push_back(Segment { id, lines });
        }
        let next_id = segments
            .back()
            .map_or(start_id.max(1), |s: &Segment| s.id + 1);

        let mut q = DiskBuffer {
            dir: dir.to_path_buf(),
            max: max.max(1),
            segment_len: segment_len.max(1),
            segments,
            skip,
            head: VecDeque::new(),
            tail: None,
            next_id,
            cursor,
            len: 0,
            removed: 0,
            dropped: 0,
            _lock: lock,
        };
        q.skip = q.skip.min(q.segments.front().map_or(0, |s| s.lines));
        q.len = q.segments.iter().map(|s| s.lines).sum::<usize>() - q.skip;
        q.load_head()?;
        // Drop empty leading segments (all taken) so `head` is never empty while items wait.
        q.settle_front()?;
        // A smaller --buffer-max than last time: keep the newest.
        while q.len > q.max {
            q.take_front()?;
            q.dropped += 1;
        }
        if q.len > 0 {
            let p = q.seg_path(q.segments.back().map_or(0, |s| s.id));
            let f = OpenOptions::new().append(true).open(&p).map_err(io(&p))?;
            q.tail = Some(f);
        }
        Ok(q)
    }

    fn seg_path(&self, id: u64) -> PathBuf {
        self.dir.join(seg_name(id))
    }

    fn io(&self, source: std::io::Error) -> BufferError {
        BufferError::Io {
            path: self.dir.display().to_string(),
            source,
        }
    }

    /// Reads the first segment's untaken lines into memory.
    fn load_head(&mut self) -> Result<(), BufferError> {
        self.head.clear();
        let Some(first) = self.segments.front() else {
            return Ok(());
        };
        let bytes = fs::read(self.seg_path(first.id)).map_err(|e| self.io(e))?;
        self.head = bytes
            .split(|b| *b == b'\n')
            .take(first.lines)
            .skip(self.skip)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        Ok(())
    }

    /// Removes fully-taken leading segments and moves the cursor past them.
    fn settle_front(&mut self) -> Result<(), BufferError> {
        while let Some(first) = self.segments.front() {
            if self.skip < first.lines {
                break;
            }
            let old = first.id;
            let next = self.segments.get(1).map_or(self.next_id, |s| s.id);
            // Cursor first: a crash before the delete leaves a stale file, never a lost one.
            self.skip = 0;
            self.write_cursor(next)?;
            self.segments.pop_front();
            if self.segments.is_empty() {
                self.tail = None;
                self.next_id = next;
            }
            fs::remove_file(self.seg_path(old)).map_err(|e| self.io(e))?;
            self.load_head()?;
        }
        Ok(())
    }

    fn write_cursor(&self, seg: u64) -> Result<(), BufferError> {
        let rec = cursor_record(seg, self.skip);
        self.cursor
            .write_all_at(rec.as_bytes(), 0)
            .and_then(|()| self.cursor.sync_data())
            .map_err(|e| self.io(e))
    }

    /// Removes the oldest item durably.
    fn take_front(&mut self) -> Result<(), BufferError> {
        if self.head.pop_front().is_none() {
            return Ok(());
        }
        self.skip += 1;
        self.len -= 1;
        self.removed += 1;
        let first = self.segments.front().map_or(0, |s| s.id);
        if self.skip < self.segments.front().map_or(0, |s| s.lines) {
            self.write_cursor(first)
        } else {
            self.settle_front()
        }
    }

    /// Appends an item durably (fsync'd before this returns). When the buffer is full the
    /// oldest items are dropped first; `dropped` counts them.
    pub fn push(&mut self, item: &str) -> Result<(), BufferError> {
        if item.contains(['\n', '\r']) {
            return Err(BufferError::LineBreak);
        }
        while self.len >= self.max {
            self.take_front()?;
            self.dropped += 1;
        }
        let full = self
            .segments
            .back()
            .is_none_or(|s| s.lines >= self.segment_len);
        if full || self.tail.is_none() {
            self.start_segment()?;
        }
        let tail = self.tail.as_mut().ok_or_else(|| BufferError::Io {
            path: self.dir.display().to_string(),
            source: std::io::Error::other("no segment open for appending"),
        })?;
        let mut line = String::with_capacity(item.len() + 1);
        line.push_str(item);
        line.push('\n');
        let before = tail.metadata().map(|m| m.len());
        let res = tail
            .write_all(line.as_bytes())
            .and_then(|()| tail.sync_data());
        if let Err(e) = res {
            // Take back a partial line (a full disk), or the next append would glue onto it.
            if let Ok(len) = before {
                let _ = tail.set_len(len);
            }
            return Err(self.io(e));
        }
        if let Some(last) = self.segments.back_mut() {
            last.lines += 1;
        }
        if self.segments.len() == 1 {
            self.head.push_back(item.to_string());
        }
        self.len += 1;
        Ok(())
    }

    fn start_segment(&mut self) -> Result<(), BufferError> {
        if let Some(last) = self.segments.back() {
            if last.lines < self.segment_len && self.tail.is_none() {
                // Reopen the existing tail (after `open` found it empty of untaken items).
                let f = OpenOptions::new()
                    .append(true)
                    .open(self.seg_path(last.id))
                    .map_err(|e| self.io(e))?;
                self.tail = Some(f);
                return Ok(());
            }
        }
        let id = self.next_id;
        let f = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(self.seg_path(id))
            .map_err(|e| self.io(e))?;
        // The new name must survive a crash too, or its fsync'd items would vanish with it.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(e))?;
        if self.segments.is_empty() {
            self.skip = 0;
            self.write_cursor(id)?;
        }
        self.segments.push_back(Segment { id, lines: 0 });
        self.tail = Some(f);
        self.next_id = id + 1;
        Ok(())
    }

    /// The oldest item.
    pub fn front(&self) -> Option<&str> {
        self.head.front().map(String::as_str)
    }

    /// Removes the oldest item durably.
    pub fn pop(&mut self) -> Result<(), BufferError> {
        self.take_front()
    }

    /// How many items were removed (taken or dropped) since open: together with `front`, an
    /// identity for the item at the front, so a caller that sent it can tell whether it is
    /// still there after pushes that may have dropped it.
    pub fn removed(&self) -> u64 {
        self.removed
    }

    /// Removes the front item only if `removed()` still equals `removed_then`, i.e. it is the
    /// same item the caller saw. Returns whether it did.
    pub fn pop_if_front(&mut self, removed_then: u64) -> Result<bool, BufferError> {
        if self.removed != removed_then || self.head.is_empty() {
            return Ok(false);
        }
        self.take_front()?;
        Ok(true)
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.max
    }

    /// Oldest items dropped because the buffer was full, since open.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut DiskBuffer) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(f) = q.front() {
            out.push(f.to_string());
            q.pop().unwrap();
        }
        out
    }

    fn segs(dir: &Path) -> usize {
        fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".seg")
            })
            .count()
    }

    #[test]
    fn keeps_order_across_reopens_and_segments() {
        let dir = tempfile::tempdir().unwrap();
        let items: Vec<String> = (0..25).map(|i| format!("r{i}")).collect();
        {
            let mut q = DiskBuffer::open_with_segment_len(dir.path(), 1000, 4).unwrap();
            for i in &items[..10] {
                q.push(i).unwrap();
            }
            assert_eq!(q.front(), Some("r0"));
            q.pop().unwrap();
            q.pop().unwrap();
            assert_eq!(q.len(), 8);
        }
        let mut got = Vec::new();
        {
            let mut q = DiskBuffer::open_with_segment_len(dir.path(), 1000, 4).unwrap();
            assert_eq!((q.len(), q.front()), (8, Some("r2")));
            for i in &items[10..] {
                q.push(i).unwrap();
            }
            for _ in 0..9 {
                got.push(q.front().unwrap().to_string());
                q.pop().unwrap();
            }
        }
        let mut q = DiskBuffer::open_with_segment_len(dir.path(), 1000, 4).unwrap();
        got.extend(drain(&mut q));
        assert_eq!(got, items[2..]);
        assert!(q.is_empty());
        assert_eq!(segs(dir.path()), 0, "taken segments are deleted");
        q.push("after").unwrap();
        drop(q);
        let mut q = DiskBuffer::open_with_segment_len(dir.path(), 1000, 4).unwrap();
        assert_eq!(drain(&mut q), ["after"]);
    }

    #[test]
    fn enforces_its_bound_by_dropping_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = DiskBuffer::open_with_segment_len(dir.path(), 100, 16).unwrap();
        for i in 0..1000 {
            q.push(&format!("s{i}")).unwrap();
            assert!(q.len() <= 100);
            if i % 7 == 0 {
                q.pop().unwrap();
            }
        }
        assert_eq!(q.len(), 100);
        // 1000 pushed, 143 taken (every 7th), 100 left: the rest were dropped.
        assert_eq!(q.dropped(), 1000 - 143 - 100);
        assert!(segs(dir.path()) <= 100 / 16 + 2, "old segments go");
        let front = q.front().unwrap().to_string();
        assert_eq!(front, "s900");
        drop(q);
        let mut q = DiskBuffer::open_with_segment_len(dir.path(), 100, 16).unwrap();
        assert_eq!((q.len(), q.dropped()), (100, 0));
        let all = drain(&mut q);
        assert_eq!(
            all,
            (900..1000).map(|i| format!("s{i}")).collect::<Vec<_>>()
        );
        // Reopened with a smaller bound, the newest are kept.
        for i in 0..50 {
            q.push(&format!("t{i}")).unwrap();
        }
        drop(q);
        let q = DiskBuffer::open_with_segment_len(dir.path(), 10, 16).unwrap();
        assert_eq!((q.len(), q.dropped(), q.front()), (10, 40, Some("t40")));
    }

    #[test]
    fn survives_a_torn_append_and_a_torn_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = DiskBuffer::open_with_segment_len(dir.path(), 100, 8).unwrap();
        for i in 0..5 {
            q.push(&format!("a{i}")).unwrap();
        }
        q.pop().unwrap();
        drop(q);
        // A crash mid-append leaves half a line.
        let seg = dir.path().join(seg_name(1));
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"{\"half").unwrap();
        drop(f);
        let mut q = DiskBuffer::open_with_segment_len(dir.path(), 100, 8).unwrap();
        assert_eq!((q.len(), q.front()), (4, Some("a1")));
        q.push("b").unwrap();
        drop(q);
        // A garbled cursor replays from the start: duplicates, never loss.
        fs::write(
            dir.path().join("cursor"),
            "00000000000000000001 0000garbage",
        )
        .unwrap();
        let mut q = DiskBuffer::open_with_segment_len(dir.path(), 100, 8).unwrap();
        assert_eq!(drain(&mut q), ["a0", "a1", "a2", "a3", "a4", "b"]);
    }

    #[test]
    fn a_stale_taken_segment_is_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = DiskBuffer::open_with_segment_len(dir.path(), 100, 2).unwrap();
        for i in 0..5 {
            q.push(&format!("x{i}")).unwrap();
        }
        q.pop().unwrap();
        q.pop().unwrap();
        drop(q);
        // As if the crash hit between the cursor update and the delete.
        fs::write(dir.path().join(seg_name(1)), "x0\nx1\n").unwrap();
        let mut q = DiskBuffer::open_with_segment_len(dir.path(), 100, 2).unwrap();
        assert_eq!(drain(&mut q), ["x2", "x3", "x4"]);
        assert!(!dir.path().join(seg_name(1)).exists());
    }

    #[test]
    fn pop_if_front_only_pops_the_item_seen() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = DiskBuffer::open(dir.path(), 2).unwrap();
        q.push("a").unwrap();
        let seen = q.removed();
        q.push("b").unwrap();
        q.push("c").unwrap(); // full: drops "a" while it was being sent
        assert!(!q.pop_if_front(seen).unwrap());
        assert_eq!(q.front(), Some("b"));
        let seen = q.removed();
        assert!(q.pop_if_front(seen).unwrap());
        assert_eq!(q.front(), Some("c"));
    }

    #[test]
    fn one_process_per_buffer_and_no_line_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = DiskBuffer::open(dir.path(), 10).unwrap();
        let e = DiskBuffer::open(dir.path(), 10).unwrap_err().to_string();
        assert!(e.contains("in use by another process"), "{e}");
        assert!(matches!(q.push("a\nb"), Err(BufferError::LineBreak)));
        drop(q);
        assert!(DiskBuffer::open(dir.path(), 10).is_ok(), "unlocked on drop");
    }
}
