//! The storage layer: every file operation the engine does (open, read, read-at, write-at,
//! append, set_len, fsync of a file or a directory, rename, remove, list, create a directory,
//! map a sealed file, lock the store directory) goes through a `Storage`, in the manner of
//! redb's `StorageBackend` and raft-engine's `FileSystem`. Production uses `OsStorage` (the
//! system calls, memmap2 for maps). Tests can swap in `SimStorage`, a disk that keeps written
//! and synced state apart and loses on `crash()` whatever was not synced, so that a missing
//! fsync anywhere shows up as lost or resurrected data (docs/design.md, "Storage").
//!
//! `crate::fs::Fs` layers fault injection (`FaultInjector`) over any `Storage`.

mod os;
mod sim;

pub use os::OsStorage;
/// A test tool (the simulated power failures of tests/sim_crash.rs), not a production backend.
#[doc(hidden)]
pub use sim::SimStorage;

use std::any::Any;
use std::fmt;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read an existing file.
    Read,
    /// Read and write an existing file.
    ReadWrite,
    /// Read and write a new file; fails with `AlreadyExists` if the name is taken.
    CreateNew,
    /// Read and write, created if missing, emptied if present.
    CreateTruncate,
    /// Read, and write at the end only; created if missing.
    Append,
}

impl OpenMode {
    /// Whether opening may create or change a file (counts as a write for the simulator).
    pub fn mutates(self) -> bool {
        !matches!(self, OpenMode::Read | OpenMode::ReadWrite)
    }
}

/// An open file. Shared (`FileHandle` is an `Arc`): a clone is another handle on the same
/// file, as `File::try_clone` is.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Fills `buf` from `offset`; `UnexpectedEof` if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at the end of the file.
    fn append(&self, buf: &[u8]) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// fdatasync: the file's data (and size) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// fsync: data and metadata durable.
    fn sync_all(&self) -> io::Result<()>;
    /// The file's current size.
    fn size(&self) -> io::Result<u64>;
    /// The whole file, read-only, as it is now. Only for files no longer written in place
    /// (sealed segments, cache files) or whose readers stay within what was written.
    fn map(&self) -> io::Result<Mapped>;
    /// The whole file, copied.
    fn read_to_end(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.size()?).map_err(|_| io::ErrorKind::OutOfMemory)?;
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// An open file of a `Storage`.
pub type FileHandle = Arc<dyn StorageFile>;

/// Every file and directory operation of the engine. Paths are those the engine builds from
/// the store directory; a directory's entries (created, renamed, removed files) are durable
/// only after `sync_dir` of that directory, a file's bytes only after its `sync_data`.
pub trait Storage: Send + Sync + fmt::Debug {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileHandle>;
    /// A whole file's bytes.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.open(path, OpenMode::Read)?.read_to_end()
    }
    /// A file's size (stat); `NotFound` if there is none.
    fn size(&self, path: &Path) -> io::Result<u64>;
    /// Whether a file or directory is there.
    fn exists(&self, path: &Path) -> bool;
    fn is_dir(&self, path: &Path) -> bool;
    /// The entries of a directory, as full paths, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Creates `dir` and its missing parents (not durable until their parents are synced).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// fsync of a directory: its entries as they are now become durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Atomic rename (replacing `to`), durable once both directories are synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Takes the exclusive lock held by `path` (the store's `LOCK`) until the returned guard
    /// drops; `None` when another holder has it.
    fn lock(&self, path: &Path) -> io::Result<Option<DirLock>>;
}

/// The default storage: the operating system's.
pub fn default_storage() -> Arc<dyn Storage> {
    Arc::new(OsStorage)
}

/// A held directory lock; released when dropped.
pub struct DirLock {
    _guard: Box<dyn Any + Send + Sync>,
}

impl DirLock {
    pub fn new(guard: impl Any + Send + Sync) -> DirLock {
        DirLock {
            _guard: Box::new(guard),
        }
    }
}

impl fmt::Debug for DirLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DirLock")
    }
}

/// A read-only view of a whole file (an mmap, or the simulator's copy). Cheap to clone.
#[derive(Clone)]
pub struct Mapped(Arc<dyn AsRef<[u8]> + Send + Sync>);

impl Mapped {
    pub fn new(bytes: impl AsRef<[u8]> + Send + Sync + 'static) -> Mapped {
        Mapped(Arc::new(bytes))
    }
}

impl Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for Mapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mapped({} bytes)", self.len())
    }
}

/// `io::Write` over a file, each write appended at its end (for a `BufWriter`).
#[derive(Debug, Clone)]
pub struct Appender(pub FileHandle);

impl io::Write for Appender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.append(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
