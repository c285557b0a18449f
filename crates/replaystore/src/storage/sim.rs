//! `SimStorage`: an in-memory disk that keeps, per file, the bytes written apart from the bytes
//! synced, and per directory the entries as they are apart from the entries as last synced.
//! `crash()` is a power failure: only what was synced survives (file data as of the file's
//! last `sync_data`/`sync_all`, directory entries as of the directory's last `sync_dir`; a file
//! whose entry was never synced disappears, an unsynced rename or removal is undone). With
//! `torn_writes`, a crash also keeps a random prefix of each file's unsynced appended bytes.
//!
//! `power_off_after(k)` lets the next `k` mutating operations succeed and fails every later
//! operation (reads included) with EIO, as a machine losing power at that instant; `crash()`
//! then powers the disk back on with what survived. Handles opened before a crash stay dead.
//!
//! The model assumes what ext4/xfs guarantee with `data=ordered`: a synced file's data and size
//! are durable, an entry is durable once its directory is synced, a rename is atomic. It is
//! stricter than those file systems (they often persist more), never looser.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{DirLock, FileHandle, Mapped, OpenMode, Storage, StorageFile};

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir,
}

#[derive(Debug, Default, Clone)]
struct Dir {
    live: BTreeMap<OsString, Entry>,
    durable: BTreeMap<OsString, Entry>,
}

#[derive(Debug)]
struct State {
    /// Bumped by every crash: handles and locks of an older generation are dead.
    generation: u64,
    next_ino: u64,
    inodes: HashMap<u64, Inode>,
    /// Every directory, by absolute path ("/" always exists).
    dirs: HashMap<PathBuf, Dir>,
    /// Mutating operations so far.
    ops: u64,
    /// Mutating operations allowed before the power goes.
    power_off_at: Option<u64>,
    powered_off: bool,
    locks: HashSet<PathBuf>,
    torn_writes: bool,
    rng: u64,
    crashes: u64,
}

/// A simulated disk (see the module comment). Share it with `Arc`; `Config::with_storage`.
#[derive(Debug, Clone)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

fn eio(why: &str) -> io::Error {
    io::Error::other(format!("simulated disk: {why}"))
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// Absolute, normal form of `p` (the simulator's root is "/", also its working directory).
fn abs(p: &Path) -> PathBuf {
    Path::new("/").join(p).components().collect()
}

fn split(p: &Path) -> io::Result<(PathBuf, OsString)> {
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) => Ok((parent.to_path_buf(), name.to_os_string())),
        _ => Err(errno(libc::EINVAL)),
    }
}

impl Default for SimStorage {
    fn default() -> Self {
        let mut dirs = HashMap::new();
        dirs.insert(PathBuf::from("/"), Dir::default());
        SimStorage {
            state: Arc::new(Mutex::new(State {
                generation: 0,
                next_ino: 1,
                inodes: HashMap::new(),
                dirs,
                ops: 0,
                power_off_at: None,
                powered_off: false,
                locks: HashSet::new(),
                torn_writes: false,
                rng: 0x9E37_79B9_7F4A_7C15,
                crashes: 0,
            })),
        }
    }
}

impl SimStorage {
    pub fn new() -> SimStorage {
        SimStorage::default()
    }

    /// A crash also keeps a random prefix (from an RNG seeded with `seed`) of the bytes each
    /// file had appended past its synced length.
    pub fn with_torn_writes(self, seed: u64) -> SimStorage {
        {
            let mut st = self.state.lock();
            st.torn_writes = true;
            st.rng = seed | 1;
        }
        self
    }

    /// Mutating operations (creations, writes, truncations, syncs, renames, removals) so far.
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// Crashes so far.
    pub fn crashes(&self) -> u64 {
        self.state.lock().crashes
    }

    /// The next `k` mutating operations succeed; every operation after them fails with EIO
    /// until `crash()`.
    pub fn power_off_after(&self, k: u64) {
        let mut st = self.state.lock();
        st.power_off_at = Some(st.ops + k);
    }

    /// Whether the power went (an operation was refused since the last crash).
    pub fn powered_off(&self) -> bool {
        self.state.lock().powered_off
    }

    /// A power failure and restart: everything not synced is lost (see the module comment).
    pub fn crash(&self) {
        let mut st = self.state.lock();
        st.crash();
    }
}

impl State {
    /// Refuses every operation once the power is off.
    fn alive(&self) -> io::Result<()> {
        if self.powered_off {
            return Err(eio("powered off"));
        }
        Ok(())
    }

    /// Counts one mutating operation; the one past `power_off_at` turns the power off.
    fn tick(&mut self) -> io::Result<()> {
        self.alive()?;
        if self.power_off_at.is_some_and(|k| self.ops >= k) {
            self.powered_off = true;
            return Err(eio("powered off"));
        }
        self.ops += 1;
        Ok(())
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn lookup(&self, p: &Path) -> Option<Entry> {
        if p == Path::new("/") {
            return Some(Entry::Dir);
        }
        let (parent, name) = split(p).ok()?;
        self.dirs.get(&parent)?.live.get(&name).copied()
    }

    fn file_ino(&self, p: &Path) -> io::Result<u64> {
        match self.lookup(p) {
            Some(Entry::File(ino)) => Ok(ino),
            Some(Entry::Dir) => Err(errno(libc::EISDIR)),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn dir_mut(&mut self, p: &Path) -> io::Result<&mut Dir> {
        self.dirs
            .get_mut(p)
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    /// Keeps what survives a power failure: the durable tree from "/", each reachable file's
    /// synced bytes (plus, with torn writes, a random prefix of its unsynced appends).
    fn crash(&mut self) {
        let mut dirs = HashMap::new();
        let mut reachable = HashSet::new();
        let mut todo = vec![PathBuf::from("/")];
        while let Some(p) = todo.pop() {
            let durable = self
                .dirs
                .get(&p)
                .map(|d| d.durable.clone())
                .unwrap_or_default();
            for (name, e) in &durable {
                match e {
                    Entry::Dir => todo.push(p.join(name)),
                    Entry::File(ino) => {
                        reachable.insert(*ino);
                    }
                }
            }
            let dir = Dir {
                live: durable.clone(),
                durable,
            };
            dirs.insert(p, dir);
        }
        self.dirs = dirs;
        self.inodes.retain(|ino, _| reachable.contains(ino));
        let torn = self.torn_writes;
        let mut inos: Vec<u64> = self.inodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let r = if torn { self.next_random() } else { 0 };
            let Some(i) = self.inodes.get_mut(&ino) else {
                continue;
            };
            let mut kept = i.synced.clone();
            if torn && i.data.len() > i.synced.len() && i.data.starts_with(&i.synced) {
                let extra = i.data.len() - i.synced.len();
                let n = (r % (extra as u64 + 1)) as usize;
                kept.extend_from_slice(&i.data[i.synced.len()..i.synced.len() + n]);
            }
            i.synced = kept.clone();
            i.data = kept;
        }
        self.generation += 1;
        self.powered_off = false;
        self.power_off_at = None;
        self.locks.clear();
        self.crashes += 1;
    }
}

#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    generation: u64,
    writable: bool,
}

impl SimFile {
    /// Runs `f` on this file's inode, if the handle is still alive (no crash since it was
    /// opened), after counting the operation when it mutates.
    fn with<T>(&self, mutates: bool, f: impl FnOnce(&mut Inode) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.state.lock();
        if st.generation != self.generation {
            return Err(eio("handle opened before a crash"));
        }
        if mutates {
            if !self.writable {
                return Err(errno(libc::EBADF));
            }
            st.tick()?;
        } else {
            st.alive()?;
        }
        let inode = st
            .inodes
            .get_mut(&self.ino)
            .ok_or_else(|| eio("no inode"))?;
        f(inode)
    }
}

impl StorageFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(false, |i| {
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            let src = start
                .checked_add(buf.len())
                .and_then(|end| i.data.get(start..end))
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(src);
            Ok(())
        })
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(true, |i| {
            let start = usize::try_from(offset).map_err(|_| errno(libc::EFBIG))?;
            let end = start + buf.len();
            if i.data.len() < end {
                i.data.resize(end, 0);
            }
            i.data[start..end].copy_from_slice(buf);
            Ok(())
        })
    }
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        self.with(true, |i| {
            i.data.extend_from_slice(buf);
            Ok(())
        })
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(true, |i| {
            i.data
                .resize(usize::try_from(len).map_err(|_| errno(libc::EFBIG))?, 0);
            Ok(())
        })
    }
    fn sync_data(&self) -> io::Result<()> {
        self.with(true, |i| {
            i.synced = i.data.clone();
            Ok(())
        })
    }
    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
    fn size(&self) -> io::Result<u64> {
        self.with(false, |i| Ok(i.data.len() as u64))
    }
    fn map(&self) -> io::Result<Mapped> {
        // A copy: later writes to the file do not show through, as for a sealed file's map.
        self.with(false, |i| Ok(Mapped::new(i.data.clone())))
    }
}

/// The simulator's directory lock: released on drop unless a crash released it already.
struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    generation: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = self.state.lock();
        if st.generation == self.generation {
            st.locks.remove(&self.path);
        }
    }
}

impl Storage for SimStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileHandle> {
        let path = abs(path);
        let mut st = self.state.lock();
        if mode.mutates() {
            st.tick()?;
        } else {
            st.alive()?;
        }
        let ino = match st.lookup(&path) {
            Some(Entry::Dir) => return Err(errno(libc::EISDIR)),
            Some(Entry::File(_)) if mode == OpenMode::CreateNew => {
                return Err(io::ErrorKind::AlreadyExists.into())
            }
            Some(Entry::File(ino)) => {
                if mode == OpenMode::CreateTruncate {
                    if let Some(i) = st.inodes.get_mut(&ino) {
                        i.data.clear();
                    }
                }
                ino
            }
            None if mode.mutates() => {
                let (parent, name) = split(&path)?;
                let ino = st.next_ino;
                st.dir_mut(&parent)?.live.insert(name, Entry::File(ino));
                st.next_ino += 1;
                st.inodes.insert(ino, Inode::default());
                ino
            }
            None => return Err(io::ErrorKind::NotFound.into()),
        };
        Ok(Arc::new(SimFile {
            state: self.state.clone(),
            ino,
            generation: st.generation,
            writable: mode != OpenMode::Read,
        }))
    }
    fn size(&self, path: &Path) -> io::Result<u64> {
        let st = self.state.lock();
        st.alive()?;
        let ino = st.file_ino(&abs(path))?;
        Ok(st.inodes.get(&ino).map_or(0, |i| i.data.len() as u64))
    }
    fn exists(&self, path: &Path) -> bool {
        self.state.lock().lookup(&abs(path)).is_some()
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.state.lock().lookup(&abs(path)) == Some(Entry::Dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let dir = abs(dir);
        let st = self.state.lock();
        st.alive()?;
        let d = st.dirs.get(&dir).ok_or(io::ErrorKind::NotFound)?;
        Ok(d.live.keys().map(|n| dir.join(n)).collect())
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let dir = abs(dir);
        let mut st = self.state.lock();
        st.alive()?;
        let mut ancestors: Vec<&Path> = dir.ancestors().collect();
        ancestors.reverse();
        for p in ancestors {
            match st.lookup(p) {
                Some(Entry::Dir) => continue,
                Some(Entry::File(_)) => return Err(io::ErrorKind::AlreadyExists.into()),
                None => {}
            }
            st.tick()?;
            let (parent, name) = split(p)?;
            st.dir_mut(&parent)?.live.insert(name, Entry::Dir);
            st.dirs.insert(p.to_path_buf(), Dir::default());
        }
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let dir = abs(dir);
        let mut st = self.state.lock();
        st.tick()?;
        let d = st.dir_mut(&dir)?;
        d.durable = d.live.clone();
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (abs(from), abs(to));
        let mut st = self.state.lock();
        st.tick()?;
        let ino = st.file_ino(&from)?;
        if st.lookup(&to) == Some(Entry::Dir) {
            return Err(errno(libc::EISDIR));
        }
        let (to_parent, to_name) = split(&to)?;
        if !st.dirs.contains_key(&to_parent) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let (from_parent, from_name) = split(&from)?;
        st.dir_mut(&from_parent)?.live.remove(&from_name);
        st.dir_mut(&to_parent)?
            .live
            .insert(to_name, Entry::File(ino));
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = abs(path);
        let mut st = self.state.lock();
        st.tick()?;
        st.file_ino(&path)?;
        let (parent, name) = split(&path)?;
        st.dir_mut(&parent)?.live.remove(&name);
        Ok(())
    }
    fn lock(&self, path: &Path) -> io::Result<Option<DirLock>> {
        let path = abs(path);
        let mut st = self.state.lock();
        st.alive()?;
        if !st.locks.insert(path.clone()) {
            return Ok(None);
        }
        Ok(Some(DirLock::new(SimLock {
            state: self.state.clone(),
            path,
            generation: st.generation,
        })))
    }
}
