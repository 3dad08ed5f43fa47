//! A lazy filesystem for power-loss tests, after Jepsen's LazyFS: a FUSE passthrough to a
//! backing directory that keeps every write in memory until the file is fsync'd, and on a
//! simulated power cut ([`LazyMount::crash`]) forgets whatever was not synced.
//!
//! A SIGKILL keeps the kernel's page cache, so a store that acknowledges before its fsync
//! passes every kill -9 test. Here the "page cache" belongs to this filesystem and dies with
//! the crash: after a remount only fsync'd data is there.
//!
//! The model, op by op:
//! - `write`, and truncation (`setattr` with a size, which is also how the kernel sends
//!   `open(O_TRUNC)`), change only the file's in-memory [`Cache`] (4 KiB pages over the
//!   backing file's content). The backing file, the "disk", is untouched.
//! - `read` and `getattr` see the in-memory view: what a program expects to read back.
//! - `fsync`/`fdatasync` of a file (from any descriptor: as on Linux it syncs the file, not
//!   the descriptor) writes its cached pages and size to the backing file and fsyncs that.
//! - `flush` and `release` (close, also the implicit close of a killed process) sync nothing:
//!   closing a file is no durability promise.
//! - Metadata is simplified: `create`, `mkdir`, `unlink`, `rmdir`, `rename` and `chmod` are
//!   applied to the backing directory at once and count as durable, so `fsyncdir` has nothing
//!   left to do (it fsyncs the backing directory anyway). A file created and never fsync'd
//!   therefore survives a crash with its last synced content: empty, if it never was synced.
//! - [`LazyMount::crash`] (or the fsync armed by [`LazyMount::crash_at_fsync`]) freezes the
//!   filesystem atomically with respect to every other op (one lock): every cached page is
//!   dropped, and from then on every op fails with EIO, as the disk of a machine that lost
//!   power would. The programs using it are then killed and
//!   the filesystem unmounted; mounting the backing directory again shows what was synced.
//!
//! Not modelled: times, ownership, links, xattrs, mmap writes (the kernel's FUSE does not
//! allow shared writable mappings without a writeback cache, which is off) and torn sectors
//! within one fsync'd write (each fsync is applied whole). Locks (`flock`, `fcntl`) are left
//! to the kernel, which keeps them locally when the filesystem does not implement them.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use fuser::{
    BackgroundSession, BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use nix::libc;

/// Page size of the in-memory cache.
const PAGE: u64 = 4096;
/// How long the kernel may cache names and attributes. Every change goes through this
/// filesystem (the kernel updates its copy on each reply), so caching is safe and a second
/// saves a lookup per path component.
const TTL: Duration = Duration::from_secs(1);
/// Dirty files up to this size have their whole in-memory content in a [`CrashReport`].
const REPORT_CONTENT_MAX: u64 = 4 << 20;

/// What a file looks like to programs while part of it is unsynced.
#[derive(Debug)]
struct Cache {
    /// Pages written since the last fsync, by page number, with the file's current bytes.
    pages: BTreeMap<u64, Vec<u8>>,
    /// The size programs see.
    size: u64,
    /// Backing bytes at or past this offset were cut by a truncate: they read as zeros.
    /// Always `<= size` after a shrink, and never above the backing file's length.
    floor: u64,
}

impl Cache {
    fn new(backing_len: u64) -> Cache {
        Cache {
            pages: BTreeMap::new(),
            size: backing_len,
            floor: backing_len,
        }
    }

    /// Page `pn` as programs see it (without caching it).
    fn page(&self, file: &File, pn: u64) -> std::io::Result<Vec<u8>> {
        if let Some(p) = self.pages.get(&pn) {
            return Ok(p.clone());
        }
        let mut buf = vec![0u8; PAGE as usize];
        let start = pn * PAGE;
        let valid = self.floor.min(self.size).saturating_sub(start).min(PAGE) as usize;
        if valid > 0 {
            read_full_at(file, &mut buf[..valid], start)?;
        }
        Ok(buf)
    }

    fn write(&mut self, file: &File, off: u64, data: &[u8]) -> std::io::Result<()> {
        let mut done = 0usize;
        while done < data.len() {
            let pos = off + done as u64;
            let (pn, within) = (pos / PAGE, (pos % PAGE) as usize);
            let n = (PAGE as usize - within).min(data.len() - done);
            if !self.pages.contains_key(&pn) {
                let p = self.page(file, pn)?;
                self.pages.insert(pn, p);
            }
            let page = self.pages.get_mut(&pn).expect("just inserted");
            page[within..within + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        self.size = self.size.max(off + data.len() as u64);
        Ok(())
    }

    fn truncate(&mut self, len: u64) {
        if len < self.size {
            // Whole pages past the end go; the bytes past the end in the last page are zeroed
            // so that extending the file again reads zeros there, as POSIX wants.
            self.pages.retain(|pn, _| pn * PAGE < len);
            if let Some(p) = self.pages.get_mut(&(len / PAGE)) {
                p[(len % PAGE) as usize..].fill(0);
            }
            self.floor = self.floor.min(len);
        }
        self.size = len;
    }

    fn read(&self, file: &File, off: u64, n: u64) -> std::io::Result<Vec<u8>> {
        let end = (off + n).min(self.size);
        let mut out = Vec::with_capacity(end.saturating_sub(off) as usize);
        let mut pos = off;
        while pos < end {
            let (pn, within) = (pos / PAGE, pos % PAGE);
            let take = (PAGE - within).min(end - pos);
            let page = self.page(file, pn)?;
            out.extend_from_slice(&page[within as usize..(within + take) as usize]);
            pos += take;
        }
        Ok(out)
    }

    /// Writes the view to the backing file and syncs it: after this the disk holds exactly
    /// what programs see.
    fn apply(&self, file: &File, datasync: bool) -> std::io::Result<()> {
        if self.floor < file.metadata()?.len() {
            file.set_len(self.floor)?;
        }
        for (pn, page) in &self.pages {
            let start = pn * PAGE;
            let n = self.size.saturating_sub(start).min(PAGE) as usize;
            file.write_all_at(&page[..n], start)?;
        }
        file.set_len(self.size)?;
        if datasync {
            file.sync_data()
        } else {
            file.sync_all()
        }
    }
}

fn read_full_at(file: &File, buf: &mut [u8], off: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64)? {
            0 => break, // past the backing file's end: zeros
            n => done += n,
        }
    }
    Ok(())
}

/// One inode: its path in the backing directory, and while open or dirty, the backing file.
#[derive(Debug)]
struct Node {
    path: PathBuf,
    file: Option<File>,
    cache: Option<Cache>,
    open: usize,
}

/// Counters, for tests to show that the filesystem did its job.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// `write` calls (kept in memory).
    pub writes: u64,
    /// Bytes written (kept in memory).
    pub bytes_written: u64,
    /// `fsync`/`fdatasync` calls on files.
    pub fsyncs: u64,
    /// `fsync` calls that had unsynced data to apply.
    pub fsyncs_applied: u64,
}

/// A file that had unsynced changes when the crash came.
#[derive(Debug, Clone)]
pub struct DirtyFile {
    /// Path relative to the mount.
    pub path: PathBuf,
    /// Its size on the disk (what survives).
    pub synced_len: u64,
    /// Its size as programs saw it.
    pub view_len: u64,
    /// Its whole content as programs saw it, if at most 4 MiB.
    pub view: Option<Vec<u8>>,
    /// Pages written since its last fsync.
    pub dirty_pages: usize,
}

/// What a crash threw away.
#[derive(Debug, Clone)]
pub struct CrashReport {
    /// When the power went.
    pub at: Instant,
    /// Every file with unsynced changes.
    pub dirty: Vec<DirtyFile>,
    /// The counters up to the crash.
    pub stats: Stats,
}

impl CrashReport {
    /// Unsynced bytes lost, at page granularity (an upper bound): pages written since the
    /// last fsync, or the size change if larger.
    pub fn lost_bytes(&self) -> u64 {
        self.dirty
            .iter()
            .map(|d| (d.dirty_pages as u64 * PAGE).max(d.view_len.abs_diff(d.synced_len)))
            .sum()
    }
}

#[derive(Debug)]
struct State {
    crashed: bool,
    nodes: HashMap<u64, Node>,
    by_path: HashMap<PathBuf, u64>,
    next_ino: u64,
    /// Open handles: handle → inode.
    handles: HashMap<u64, (u64, bool)>,
    next_fh: u64,
    stats: Stats,
    /// The fsync (by count) that cuts the power instead, if armed.
    crash_at_fsync: Option<u64>,
    /// What the crash dropped, once it happened.
    report: Option<CrashReport>,
}

impl State {
    /// The power cut (see [`LazyMount::crash`]); a second call returns the first report.
    fn crash(&mut self) -> CrashReport {
        if let Some(r) = &self.report {
            return r.clone();
        }
        self.crashed = true;
        let mut report = CrashReport {
            at: Instant::now(),
            dirty: Vec::new(),
            stats: self.stats,
        };
        for node in self.nodes.values_mut() {
            if let Some(cache) = node.cache.take() {
                let file = node.file.as_ref();
                let synced_len = file.and_then(|f| f.metadata().ok()).map_or(0, |m| m.len());
                let view = file
                    .filter(|_| cache.size <= REPORT_CONTENT_MAX)
                    .and_then(|f| cache.read(f, 0, cache.size).ok());
                report.dirty.push(DirtyFile {
                    path: node.path.clone(),
                    synced_len,
                    view_len: cache.size,
                    view,
                    dirty_pages: cache.pages.len(),
                });
            }
            node.file = None;
        }
        report.dirty.sort_by(|a, b| a.path.cmp(&b.path));
        self.report = Some(report.clone());
        report
    }

    fn ino_for(&mut self, path: &Path) -> u64 {
        if let Some(i) = self.by_path.get(path) {
            return *i;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                path: path.to_path_buf(),
                file: None,
                cache: None,
                open: 0,
            },
        );
        self.by_path.insert(path.to_path_buf(), ino);
        ino
    }

    fn node(&mut self, ino: INodeNo) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)
    }

    /// The inode's backing file, opened read-write on first need.
    fn file<'a>(backing: &Path, node: &'a mut Node) -> std::io::Result<&'a File> {
        Ok(State::parts(backing, node)?.0)
    }

    /// The backing file (opened on first need) and the cache, borrowed apart.
    fn parts<'a>(
        backing: &Path,
        node: &'a mut Node,
    ) -> std::io::Result<(&'a File, &'a mut Option<Cache>)> {
        if node.file.is_none() {
            let p = backing.join(&node.path);
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .or_else(|_| File::open(&p))?;
            node.file = Some(f);
        }
        Ok((node.file.as_ref().expect("just opened"), &mut node.cache))
    }
}

/// The FUSE side; tests use [`LazyMount`].
struct LazyFs {
    backing: PathBuf,
    state: Arc<Mutex<State>>,
}

fn attr_of(ino: u64, md: &fs::Metadata, size: Option<u64>) -> FileAttr {
    let kind = FileType::from_std(md.file_type()).unwrap_or(FileType::RegularFile);
    let size = size.unwrap_or(md.len());
    let t = |s: i64, ns: i64| {
        SystemTime::UNIX_EPOCH + Duration::new(s.max(0) as u64, ns.clamp(0, 999_999_999) as u32)
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: t(md.atime(), md.atime_nsec()),
        mtime: t(md.mtime(), md.mtime_nsec()),
        ctime: t(md.ctime(), md.ctime_nsec()),
        crtime: t(md.ctime(), md.ctime_nsec()),
        kind,
        perm: (md.mode() & 0o7777) as u16,
        nlink: md.nlink() as u32,
        uid: md.uid(),
        gid: md.gid(),
        rdev: md.rdev() as u32,
        blksize: PAGE as u32,
        flags: 0,
    }
}

impl LazyFs {
    /// The state, or EIO once crashed.
    fn live(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.crashed {
            return Err(Errno::EIO);
        }
        Ok(st)
    }

    fn attr(&self, st: &mut State, ino: u64) -> Result<FileAttr, Errno> {
        let node = st.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        let md = match &node.file {
            // An open file may have been unlinked: ask the descriptor.
            Some(f) => f.metadata()?,
            None => fs::symlink_metadata(self.backing.join(&node.path))?,
        };
        Ok(attr_of(ino, &md, node.cache.as_ref().map(|c| c.size)))
    }

    fn child(&self, st: &mut State, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(st.node(parent)?.path.join(name))
    }

    fn entry(&self, st: &mut State, path: &Path) -> Result<FileAttr, Errno> {
        let ino = st.ino_for(path);
        self.attr(st, ino)
    }

    fn do_open(&self, st: &mut State, ino: u64, flags: i32) -> Result<u64, Errno> {
        let node = st.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        State::file(&self.backing, node)?;
        node.open += 1;
        if flags & libc::O_TRUNC != 0 {
            let len = node
                .file
                .as_ref()
                .map_or(Ok(0), |f| f.metadata().map(|m| m.len()))?;
            node.cache
                .get_or_insert_with(|| Cache::new(len))
                .truncate(0);
        }
        let fh = st.next_fh;
        st.next_fh += 1;
        st.handles.insert(fh, (ino, flags & libc::O_APPEND != 0));
        Ok(fh)
    }

    fn sync(&self, st: &mut State, ino: u64, datasync: bool) -> Result<(), Errno> {
        st.stats.fsyncs += 1;
        if st.crash_at_fsync == Some(st.stats.fsyncs) {
            st.crash();
            return Err(Errno::EIO);
        }
        let node = st.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        if let Some(cache) = node.cache.take() {
            let file = State::file(&self.backing, node)?;
            if let Err(e) = cache.apply(file, datasync) {
                node.cache = Some(cache);
                return Err(e.into());
            }
            st.stats.fsyncs_applied += 1;
        }
        Ok(())
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self.live().and_then(|mut st| {
            let path = self.child(&mut st, parent, name)?;
            fs::symlink_metadata(self.backing.join(&path))?;
            self.entry(&mut st, &path)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.live().and_then(|mut st| self.attr(&mut st, ino.0)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self.live().and_then(|mut st| {
            let node = st.node(ino)?;
            if let Some(mode) = mode {
                // Metadata: applied at once (see the module doc).
                fs::set_permissions(
                    self.backing.join(&node.path),
                    fs::Permissions::from_mode(mode & 0o7777),
                )?;
            }
            if let Some(size) = size {
                // Data: a truncate is as lazy as a write.
                let (file, cache) = State::parts(&self.backing, node)?;
                let len = file.metadata()?.len();
                cache.get_or_insert_with(|| Cache::new(len)).truncate(size);
            }
            self.attr(&mut st, ino.0)
        });
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.live().and_then(|mut st| {
            let path = self.child(&mut st, parent, name)?;
            fs::DirBuilder::new()
                .mode(mode & !umask & 0o7777)
                .create(self.backing.join(&path))?;
            self.entry(&mut st, &path)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.live().and_then(|mut st| {
            let path = self.child(&mut st, parent, name)?;
            fs::remove_file(self.backing.join(&path))?;
            // The inode lives on while open (its handles keep the backing descriptor).
            if let Some(ino) = st.by_path.remove(&path) {
                if st.nodes.get(&ino).is_some_and(|n| n.open == 0) {
                    st.nodes.remove(&ino);
                }
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.live().and_then(|mut st| {
            let path = self.child(&mut st, parent, name)?;
            fs::remove_dir(self.backing.join(&path))?;
            if let Some(ino) = st.by_path.remove(&path) {
                st.nodes.remove(&ino);
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.live().and_then(|mut st| {
            if flags.bits() != 0 {
                return Err(Errno::EINVAL); // RENAME_NOREPLACE/EXCHANGE: not needed here
            }
            let from = self.child(&mut st, parent, name)?;
            let to = self.child(&mut st, newparent, newname)?;
            fs::rename(self.backing.join(&from), self.backing.join(&to))?;
            // The replaced target's inode loses its name; the moved inode (and, for a
            // directory, everything under it) takes the new path.
            if let Some(old) = st.by_path.remove(&to) {
                if st.nodes.get(&old).is_some_and(|n| n.open == 0) {
                    st.nodes.remove(&old);
                }
            }
            let moved: Vec<(PathBuf, u64)> = st
                .by_path
                .iter()
                .filter(|(p, _)| p.starts_with(&from))
                .map(|(p, i)| (p.clone(), *i))
                .collect();
            for (p, ino) in moved {
                let rel = p.strip_prefix(&from).expect("filtered by prefix");
                // (`join("")` would add a trailing slash to the moved entry itself.)
                let np = if rel.as_os_str().is_empty() {
                    to.clone()
                } else {
                    to.join(rel)
                };
                st.by_path.remove(&p);
                st.by_path.insert(np.clone(), ino);
                if let Some(n) = st.nodes.get_mut(&ino) {
                    n.path = np;
                }
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self
            .live()
            .and_then(|mut st| self.do_open(&mut st, ino.0, flags.0))
        {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self.live().and_then(|mut st| {
            let path = self.child(&mut st, parent, name)?;
            // The name is durable at once (metadata); the content starts empty and lazy.
            let mut o = OpenOptions::new();
            o.read(true).write(true).mode(mode & !umask & 0o7777);
            if flags & libc::O_EXCL != 0 {
                o.create_new(true);
            } else {
                o.create(true);
            }
            drop(o.open(self.backing.join(&path))?);
            let ino = st.ino_for(&path);
            let fh = self.do_open(&mut st, ino, flags)?;
            Ok((self.attr(&mut st, ino)?, fh))
        });
        match r {
            Ok((a, fh)) => {
                reply.created(&TTL, &a, Generation(0), FileHandle(fh), FopenFlags::empty())
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = self.live().and_then(|mut st| {
            let node = st.node(ino)?;
            let (file, cache) = State::parts(&self.backing, node)?;
            let data = match cache {
                Some(c) => c.read(file, offset, u64::from(size))?,
                None => {
                    let mut buf = vec![0u8; size as usize];
                    let len = file.metadata()?.len();
                    let n = len.saturating_sub(offset).min(u64::from(size)) as usize;
                    read_full_at(file, &mut buf[..n], offset)?;
                    buf.truncate(n);
                    buf
                }
            };
            Ok(data)
        });
        match r {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = self.live().and_then(|mut st| {
            let append = st.handles.get(&fh.0).is_some_and(|h| h.1);
            st.stats.writes += 1;
            st.stats.bytes_written += data.len() as u64;
            let node = st.node(ino)?;
            let (file, cache) = State::parts(&self.backing, node)?;
            let len = file.metadata()?.len();
            let cache = cache.get_or_insert_with(|| Cache::new(len));
            // O_APPEND: this filesystem, not the kernel's cached size, knows where the end is.
            let off = if append { cache.size } else { offset };
            cache.write(file, off, data)?;
            Ok(data.len() as u32)
        });
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() is no fsync: nothing reaches the disk here.
        match self.live() {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.handles.remove(&fh.0);
        let unlinked = st
            .nodes
            .get(&ino.0)
            .is_some_and(|n| n.open <= 1 && st.by_path.get(&n.path) != Some(&ino.0));
        if let Some(n) = st.nodes.get_mut(&ino.0) {
            n.open = n.open.saturating_sub(1);
            // The descriptor stays while unsynced data needs it; a clean file closes.
            if n.open == 0 && n.cache.is_none() {
                n.file = None;
            }
        }
        if unlinked {
            st.nodes.remove(&ino.0);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self
            .live()
            .and_then(|mut st| self.sync(&mut st, ino.0, datasync))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.live() {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.live().and_then(|mut st| {
            let dir = st.node(ino)?.path.clone();
            let mut entries = vec![
                (ino.0, FileType::Directory, ".".into()),
                (ino.0, FileType::Directory, "..".into()),
            ];
            for e in fs::read_dir(self.backing.join(&dir))? {
                let e = e?;
                let kind = FileType::from_std(e.file_type()?).unwrap_or(FileType::RegularFile);
                let child = st.ino_for(&dir.join(e.file_name()));
                entries.push((child, kind, e.file_name()));
            }
            Ok(entries)
        });
        match r {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(ino), i as u64 + 1, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Names are durable already (see the module doc); sync the backing directory anyway.
        let r = self.live().and_then(|mut st| {
            let p = self.backing.join(&st.node(ino)?.path);
            File::open(p)?.sync_all()?;
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Made-up but roomy figures: nothing here checks free space.
        reply.statfs(
            1 << 26,
            1 << 25,
            1 << 25,
            1 << 20,
            1 << 19,
            PAGE as u32,
            255,
            PAGE as u32,
        );
    }
}

/// A mounted lazy filesystem. Dropping it unmounts (and loses unsynced data, like a crash).
pub struct LazyMount {
    session: Option<BackgroundSession>,
    state: Arc<Mutex<State>>,
    mountpoint: PathBuf,
    backing: PathBuf,
}

impl LazyMount {
    /// Mounts a lazy view of `backing` (a directory) on `mountpoint` (an empty directory).
    /// Needs /dev/fuse and the right to mount (root, or fusermount3 from Debian's `fuse3`).
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<LazyMount> {
        let backing = backing
            .canonicalize()
            .with_context(|| format!("backing directory {}", backing.display()))?;
        fs::create_dir_all(mountpoint)?;
        let mut nodes = HashMap::new();
        nodes.insert(
            INodeNo::ROOT.0,
            Node {
                path: PathBuf::new(),
                file: None,
                cache: None,
                open: 0,
            },
        );
        let state = Arc::new(Mutex::new(State {
            crashed: false,
            nodes,
            by_path: HashMap::from([(PathBuf::new(), INodeNo::ROOT.0)]),
            next_ino: 2,
            handles: HashMap::new(),
            next_fh: 1,
            stats: Stats::default(),
            crash_at_fsync: None,
            report: None,
        }));
        let fs = LazyFs {
            backing: backing.clone(),
            state: state.clone(),
        };
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("lazyfs".into()),
            MountOption::Subtype("lazyfs".into()),
            MountOption::DefaultPermissions,
        ];
        // Two workers: a read need not queue behind another process's slow fsync.
        config.n_threads = Some(2);
        let session = fuser::spawn_mount(fs, mountpoint, &config).with_context(|| {
            format!(
                "mounting the lazy FUSE filesystem on {} (needs /dev/fuse and root, or \
                 fusermount3 from Debian's fuse3: run scripts/install-fuse.sh)",
                mountpoint.display()
            )
        })?;
        let m = LazyMount {
            session: Some(session),
            state,
            mountpoint: mountpoint.to_path_buf(),
            backing,
        };
        // The mount is live once the root answers through FUSE.
        let t0 = Instant::now();
        while !is_lazyfs_mount(&m.mountpoint) {
            if t0.elapsed() > Duration::from_secs(10) {
                bail!(
                    "{} did not show up as a lazyfs mount",
                    m.mountpoint.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(m)
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The backing directory (the "disk").
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stats
    }

    /// Power cut: drops every unsynced change and fails every later op with EIO. Kill the
    /// programs using the mount next, then [`unmount`](Self::unmount).
    pub fn crash(&self) -> CrashReport {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).crash()
    }

    /// Arms a crash at the `n`th fsync of a file (counted from the mount): instead of
    /// syncing, that call cuts the power and fails with EIO. This catches a program between
    /// its write and its fsync, the one moment a crash can take written data.
    pub fn crash_at_fsync(&self, n: u64) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .crash_at_fsync = Some(n);
    }

    /// Whether the power was cut (by [`crash`](Self::crash) or an armed crash).
    pub fn crashed(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).crashed
    }

    /// Unmounts (a crash first, if none happened: unsynced data never reaches the disk).
    /// Programs using the mount must be gone; a busy mount is detached lazily.
    pub fn unmount(mut self) -> Result<CrashReport> {
        let report = self.crash();
        self.unmount_inner()?;
        Ok(report)
    }

    fn unmount_inner(&mut self) -> Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        if let Err(e) = session.umount_and_join() {
            // Still busy (a process not yet reaped): detach, the kernel finishes later.
            let out = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .output()
                .context("running umount -l")?;
            if is_lazyfs_mount(&self.mountpoint) {
                bail!(
                    "unmounting {}: {e}; umount -l: {}",
                    self.mountpoint.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(())
    }
}

impl Drop for LazyMount {
    fn drop(&mut self) {
        self.crash();
        let _ = self.unmount_inner();
    }
}

/// Whether `path` is a lazyfs mount point right now (per /proc/self/mountinfo).
pub fn is_lazyfs_mount(path: &Path) -> bool {
    let Ok(path) = path.canonicalize() else {
        return false;
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        // "ID PARENT DEV ROOT MOUNTPOINT ... - FSTYPE SOURCE OPTIONS"; the type is `fuse`
        // when mounted by mount(2) and `fuse.lazyfs` through fusermount3.
        let f: Vec<&str> = l.split(' ').collect();
        let after = l
            .split_once(" - ")
            .map(|(_, a)| a.split(' ').collect::<Vec<_>>());
        f.get(4) == Some(&want.as_ref())
            && after.is_some_and(|a| {
                a.first().is_some_and(|t| t.starts_with("fuse")) && a.get(1) == Some(&"lazyfs")
            })
    })
}

/// Why power-loss tests cannot run here, if they cannot: they need /dev/fuse, and root or
/// fusermount3. Tests fail with this message rather than skip.
pub fn unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some(
            "/dev/fuse is missing: power-loss tests need FUSE (load the fuse module, or give \
             the container --device /dev/fuse)"
                .into(),
        );
    }
    // /proc/self belongs to the process's effective user.
    let root = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let fusermount = ["/usr/bin/fusermount3", "/bin/fusermount3"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !root && !fusermount {
        return Some(
            "not root and no fusermount3: run the power-loss tests as root, or install \
             Debian's fuse3 (scripts/install-fuse.sh)"
                .into(),
        );
    }
    None
}
