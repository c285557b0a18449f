//! The file-operation layer the engine calls: a `Storage` (the OS, or the simulated disk of
//! tests) with fault injection on top. Every write, fsync, rename and removal can be made to
//! fail (ENOSPC, EIO, a short write, a failed fsync or rename) with a `FaultInjector`, in the
//! manner of raft-engine's `env`; opens, reads, lists and maps go to the storage as they are.
//! Without an injector `Fs` is the storage's plain operation.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::{DirLock, FileHandle, Mapped, OpenMode, Storage};

use parking_lot::Mutex;

/// An operation about to be performed.
#[derive(Debug, Clone, Copy)]
pub enum FileOp<'a> {
    Write { path: &'a Path, len: usize },
    Truncate { path: &'a Path, len: u64 },
    Sync { path: &'a Path },
    Rename { from: &'a Path, to: &'a Path },
    Remove { path: &'a Path },
}

impl FileOp<'_> {
    fn path(&self) -> &Path {
        match self {
            FileOp::Write { path, .. }
            | FileOp::Truncate { path, .. }
            | FileOp::Sync { path }
            | FileOp::Remove { path } => path,
            FileOp::Rename { from, .. } => from,
        }
    }
}

/// What an injector makes of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fail with this errno (e.g. `libc::ENOSPC`, `libc::EIO`) without doing anything.
    Errno(i32),
    /// Write only this many bytes, then fail with ENOSPC (a disk filling up mid-write).
    ShortWrite(usize),
}

/// Decides, per operation, whether it fails.
pub trait FaultInjector: Send + Sync + fmt::Debug {
    fn inject(&self, op: &FileOp<'_>) -> Option<Fault>;
}

#[derive(Clone)]
pub(crate) struct Fs {
    storage: Arc<dyn Storage>,
    faults: Option<Arc<dyn FaultInjector>>,
}

impl Default for Fs {
    fn default() -> Self {
        Fs::new(crate::storage::default_storage(), None)
    }
}

impl fmt::Debug for Fs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Fs {{ storage: {:?}, faults: {} }}",
            self.storage,
            self.faults.is_some()
        )
    }
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

impl Fs {
    pub fn new(storage: Arc<dyn Storage>, faults: Option<Arc<dyn FaultInjector>>) -> Fs {
        Fs { storage, faults }
    }

    fn check(&self, op: FileOp<'_>) -> Option<Fault> {
        self.faults.as_ref().and_then(|f| f.inject(&op))
    }

    /// `write_all_at`, or what a fault leaves of it.
    pub fn write_at(&self, file: &FileHandle, path: &Path, buf: &[u8], off: u64) -> io::Result<()> {
        match self.check(FileOp::Write {
            path,
            len: buf.len(),
        }) {
            None => file.write_all_at(buf, off),
            Some(Fault::Errno(e)) => Err(errno(e)),
            Some(Fault::ShortWrite(n)) => {
                file.write_all_at(&buf[..n.min(buf.len())], off)?;
                Err(errno(libc::ENOSPC))
            }
        }
    }

    /// `write_all` on a stream (an append-mode file, a buffered writer).
    pub fn write(&self, w: &mut impl Write, path: &Path, buf: &[u8]) -> io::Result<()> {
        match self.check(FileOp::Write {
            path,
            len: buf.len(),
        }) {
            None => w.write_all(buf),
            Some(Fault::Errno(e)) => Err(errno(e)),
            Some(Fault::ShortWrite(n)) => {
                w.write_all(&buf[..n.min(buf.len())])?;
                Err(errno(libc::ENOSPC))
            }
        }
    }

    /// `set_len`: cutting a torn or unacknowledged tail.
    pub fn truncate(&self, file: &FileHandle, path: &Path, len: u64) -> io::Result<()> {
        match self.check(FileOp::Truncate { path, len }) {
            Some(Fault::Errno(e)) => Err(errno(e)),
            Some(Fault::ShortWrite(_)) => Err(errno(libc::EIO)),
            None => file.set_len(len),
        }
    }

    /// fdatasync (fsync for metadata too when `all`).
    pub fn sync(&self, file: &FileHandle, path: &Path, all: bool) -> io::Result<()> {
        match self.check(FileOp::Sync { path }) {
            Some(Fault::Errno(e)) => Err(errno(e)),
            Some(Fault::ShortWrite(_)) => Err(errno(libc::EIO)),
            None if all => file.sync_all(),
            None => file.sync_data(),
        }
    }

    /// fsync of a directory, so entries created, renamed or removed in it are durable.
    pub fn sync_dir(&self, path: &Path) -> io::Result<()> {
        match self.check(FileOp::Sync { path }) {
            Some(Fault::Errno(e)) => Err(errno(e)),
            Some(Fault::ShortWrite(_)) => Err(errno(libc::EIO)),
            None => self.storage.sync_dir(path),
        }
    }

    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        match self.check(FileOp::Rename { from, to }) {
            Some(Fault::Errno(e)) => Err(errno(e)),
            Some(Fault::ShortWrite(_)) => Err(errno(libc::EIO)),
            None => self.storage.rename(from, to),
        }
    }

    pub fn remove(&self, path: &Path) -> io::Result<()> {
        match self.check(FileOp::Remove { path }) {
            Some(Fault::Errno(e)) => Err(errno(e)),
            Some(Fault::ShortWrite(_)) => Err(errno(libc::EIO)),
            None => self.storage.remove_file(path),
        }
    }
}

/// Which operations a `FaultPlan` rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Write,
    Truncate,
    Sync,
    Rename,
    Remove,
}

#[derive(Debug, Clone)]
struct Rule {
    kind: OpKind,
    path_contains: String,
    fault: Fault,
    /// Operations of this kind to let through before failing.
    skip: usize,
    /// How many times to fail; `usize::MAX` until cleared.
    times: usize,
}

/// A scriptable injector for tests: "fail the next 2 writes to a `.seg` file with ENOSPC".
#[derive(Debug, Default)]
pub struct FaultPlan {
    rules: Mutex<Vec<Rule>>,
    injected: Mutex<usize>,
}

impl FaultPlan {
    pub fn new() -> Arc<FaultPlan> {
        Arc::new(FaultPlan::default())
    }

    /// Fails `times` operations of `kind` on paths containing `path_contains`, after letting
    /// `skip` of them through.
    pub fn fail(&self, kind: OpKind, path_contains: &str, fault: Fault, skip: usize, times: usize) {
        self.rules.lock().push(Rule {
            kind,
            path_contains: path_contains.to_string(),
            fault,
            skip,
            times,
        });
    }

    /// Removes every rule: the "disk" works again.
    pub fn clear(&self) {
        self.rules.lock().clear();
    }

    /// Faults injected so far.
    pub fn injected(&self) -> usize {
        *self.injected.lock()
    }
}

impl FaultInjector for FaultPlan {
    fn inject(&self, op: &FileOp<'_>) -> Option<Fault> {
        let kind = match op {
            FileOp::Write { .. } => OpKind::Write,
            FileOp::Truncate { .. } => OpKind::Truncate,
            FileOp::Sync { .. } => OpKind::Sync,
            FileOp::Rename { .. } => OpKind::Rename,
            FileOp::Remove { .. } => OpKind::Remove,
        };
        let path = op.path().to_string_lossy();
        let mut rules = self.rules.lock();
        let rule = rules
            .iter_mut()
            .find(|r| r.kind == kind && r.times > 0 && path.contains(&r.path_contains))?;
        if rule.skip > 0 {
            rule.skip -= 1;
            return None;
        }
        rule.times = rule.times.saturating_sub(1);
        *self.injected.lock() += 1;
        Some(rule.fault)
    }
}

impl Fs {
    /// `sync_dir` with the store's error context.
    pub fn sync_dir_ctx(&self, path: &Path) -> crate::Result<()> {
        use crate::error::IoContext;
        self.sync_dir(path)
            .ctx(|| format!("fsync directory {}", path.display()))
    }

    /// Replaces `path` with `parts`, whole or not at all across a crash: written to `tmp` (in
    /// the same directory), fsynced, renamed over `path`, directory fsynced. A failure leaves
    /// `path` as it was (and possibly `tmp`, which its owner removes at open).
    pub fn replace_file(&self, path: &Path, tmp: &Path, parts: &[&[u8]]) -> crate::Result<()> {
        use crate::error::IoContext;
        let f = self
            .open(tmp, OpenMode::CreateTruncate)
            .ctx(|| format!("create {}", tmp.display()))?;
        let mut w = crate::storage::Appender(f.clone());
        for p in parts {
            self.write(&mut w, tmp, p)
                .ctx(|| format!("write {}", tmp.display()))?;
        }
        self.sync(&f, tmp, true)
            .ctx(|| format!("fsync {}", tmp.display()))?;
        self.rename(tmp, path)
            .ctx(|| format!("rename {} into place", tmp.display()))?;
        self.sync_dir_ctx(path.parent().unwrap_or(Path::new(".")))
    }
}

/// Operations that fault injection leaves alone: they go to the storage as they are.
impl Fs {
    pub fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileHandle> {
        self.storage.open(path, mode)
    }

    /// `open` with the store's error context.
    pub fn open_ctx(&self, path: &Path, mode: OpenMode) -> crate::Result<FileHandle> {
        use crate::error::IoContext;
        self.open(path, mode)
            .ctx(|| format!("open {}", path.display()))
    }

    /// A whole file's bytes.
    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.storage.read(path)
    }

    /// A file's size; `NotFound` if there is none.
    pub fn size(&self, path: &Path) -> io::Result<u64> {
        self.storage.size(path)
    }

    pub fn exists(&self, path: &Path) -> bool {
        self.storage.exists(path)
    }

    pub fn is_dir(&self, path: &Path) -> bool {
        self.storage.is_dir(path)
    }

    /// A directory's entries (full paths, sorted).
    pub fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.storage.list(dir)
    }

    /// `create_dir_all` with the store's error context. Not durable by itself: the caller
    /// syncs the parents whose entries must survive a crash.
    pub fn create_dir_all(&self, dir: &Path) -> crate::Result<()> {
        use crate::error::IoContext;
        self.storage
            .create_dir_all(dir)
            .ctx(|| format!("create {}", dir.display()))
    }

    /// Removes a file whose loss does not matter (a cache or scratch file), ignoring errors.
    pub fn remove_quietly(&self, path: &Path) {
        let _ = self.remove(path);
    }

    /// A whole file, mapped read-only.
    pub fn map(&self, file: &FileHandle, path: &Path) -> crate::Result<Mapped> {
        use crate::error::IoContext;
        file.map().ctx(|| format!("mmap {}", path.display()))
    }

    pub fn lock(&self, path: &Path) -> io::Result<Option<DirLock>> {
        self.storage.lock(path)
    }

    /// Creates the store directory if it is missing (its entry made durable in its parent, or a
    /// power failure could take the whole store with it) and takes its `LOCK`.
    pub fn open_store_dir(&self, dir: &Path) -> crate::Result<DirLock> {
        let missing: Vec<&Path> = dir
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && !self.is_dir(p))
            .collect();
        if !missing.is_empty() {
            self.create_dir_all(dir)?;
            for p in missing {
                // A relative directory's parent may be the working directory ("").
                match p.parent().filter(|p| !p.as_os_str().is_empty()) {
                    Some(parent) => self.sync_dir_ctx(parent)?,
                    None => self.sync_dir_ctx(Path::new("."))?,
                }
            }
        }
        let lock_path = dir.join("LOCK");
        match self.lock(&lock_path) {
            Ok(Some(lock)) => Ok(lock),
            Ok(None) => Err(crate::Error::Locked {
                path: dir.to_path_buf(),
            }),
            Err(e) => Err(crate::Error::io(format!("lock {}", lock_path.display()), e)),
        }
    }
}
