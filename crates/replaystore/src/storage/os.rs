//! `Storage` on the operating system: std's files, memmap2 for maps, flock for the lock.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::{DirLock, FileHandle, Mapped, OpenMode, Storage, StorageFile};

/// The operating system's files.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsStorage;

#[derive(Debug)]
struct OsFile {
    file: File,
    /// Opened with O_APPEND: every write goes to the end whatever the offset.
    append: bool,
}

impl StorageFile for OsFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        if self.append {
            (&self.file).write_all(buf)
        } else {
            self.file.write_all_at(buf, self.file.metadata()?.len())
        }
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn map(&self) -> io::Result<Mapped> {
        // SAFETY: the store holds the directory lock, so no other process writes its files;
        // the engine maps only files it no longer changes in place (sealed segments, cache
        // files written whole and renamed into place), or reads a mapped active segment only
        // below its durable length, which never shrinks while mapped.
        let map = unsafe { Mmap::map(&self.file) }?;
        Ok(Mapped::new(map))
    }
}

impl Storage for OsStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileHandle> {
        let mut o = OpenOptions::new();
        o.read(true);
        match mode {
            OpenMode::Read => &mut o,
            OpenMode::ReadWrite => o.write(true),
            OpenMode::CreateNew => o.write(true).create_new(true),
            OpenMode::CreateTruncate => o.write(true).create(true).truncate(true),
            OpenMode::Append => o.append(true).create(true),
        };
        let file = o.open(path)?;
        Ok(Arc::new(OsFile {
            file,
            append: mode == OpenMode::Append,
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn size(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<io::Result<Vec<_>>>()?;
        out.sort();
        Ok(out)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn lock(&self, path: &Path) -> io::Result<Option<DirLock>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        ProcessLock::take(file)
    }
}

/// The store directory's lock: a POSIX record lock (`fcntl(F_SETLK)`) on `LOCK` against other
/// processes, and a registry of held files against a second open in this process.
///
/// Why not `flock`: a flock belongs to the open file description, which a child process
/// shares from `fork` until its `exec` closes the descriptor. A program that spawns processes
/// (a test suite running the CLI, a server running hooks) could then see its own reopen of a
/// store fail with `Locked` because some child, for a few microseconds, still held the lock.
/// Record locks belong to the process: children never have them.
struct ProcessLock {
    /// Kept open for as long as the lock is held (closing any descriptor of the file would
    /// release a record lock, so the file is opened once, here).
    _file: File,
    key: (u64, u64),
}

/// (device, inode) of every `LOCK` this process holds.
static HELD: parking_lot::Mutex<Option<HashSet<(u64, u64)>>> = parking_lot::Mutex::new(None);

impl ProcessLock {
    fn take(file: File) -> io::Result<Option<DirLock>> {
        let meta = file.metadata()?;
        let key = (meta.dev(), meta.ino());
        let mut held = HELD.lock();
        if !held.get_or_insert_with(HashSet::new).insert(key) {
            return Ok(None);
        }
        // SAFETY: an all-zero flock is a valid value; fcntl gets a valid descriptor and a
        // pointer to a live struct for the duration of the call.
        let rc = unsafe {
            let mut lock: libc::flock = std::mem::zeroed();
            lock.l_type = libc::F_WRLCK as libc::c_short;
            lock.l_whence = libc::SEEK_SET as libc::c_short;
            libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock)
        };
        if rc == 0 {
            return Ok(Some(DirLock::new(ProcessLock { _file: file, key })));
        }
        let err = io::Error::last_os_error();
        if let Some(set) = held.as_mut() {
            set.remove(&key);
        }
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(None),
            _ => Err(err),
        }
    }
}

impl Drop for ProcessLock {
    fn drop(&mut self) {
        // The record lock goes with the file, closed right after this.
        if let Some(set) = HELD.lock().as_mut() {
            set.remove(&self.key);
        }
    }
}
