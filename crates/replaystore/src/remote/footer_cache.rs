//! The local cache of remote segments' footers, bounded by `footer_cache_bytes`.
//!
//! Two files per remote segment in `<dir>/remote/footers/`:
//! - `<id>.meta`: segment header, trailer, and the footer's fixed part, bloom filter and
//!   replaces list. Small (~1.25 bytes per session), always kept: open builds the segment's
//!   index from it without a request.
//! - `<id>.ftr`: segment header, whole footer, trailer (the session table, block references and
//!   summaries). Evicted least recently used first once the cache holds more than its bound;
//!   fetched again with one range GET when a lookup needs it.
//!
//! A reader holding an evicted footer keeps reading it: the mapping outlives the unlinked file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{IoContext, Result};
use crate::fs::Fs;
use crate::storage::{Mapped, OpenMode};

pub(crate) struct FooterCache {
    dir: PathBuf,
    limit: u64,
    fs: Fs,
    /// Numbers temp files: two readers may fetch the same footer at once.
    next_tmp: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bytes of `.ftr` files on disk.
    used: u64,
    tick: u64,
    /// Per segment: last use, file size, and the mapping once loaded.
    entries: HashMap<u64, Entry>,
}

struct Entry {
    used_at: u64,
    len: u64,
    map: Option<Arc<Mapped>>,
}

impl FooterCache {
    /// Opens the cache directory, counting the footers already in it (and trimming them to
    /// the bound).
    pub fn open(dir: &Path, limit: u64, fs: &Fs) -> Result<FooterCache> {
        fs.create_dir_all(dir)?;
        let mut state = State::default();
        let rd = fs.list(dir).ctx(|| format!("list {}", dir.display()))?;
        for p in rd {
            let id = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ftr"))
                .and_then(|n| n.parse::<u64>().ok());
            match (id, fs.size(&p)) {
                (Some(id), Ok(len)) => {
                    state.used += len;
                    let entry = Entry {
                        used_at: 0,
                        len,
                        map: None,
                    };
                    state.entries.insert(id, entry);
                }
                // Temp files of a write cut short.
                _ if p.extension().is_some_and(|x| x == "tmp") => {
                    fs.remove_quietly(&p);
                }
                _ => {}
            }
        }
        let cache = FooterCache {
            dir: dir.to_path_buf(),
            limit,
            fs: fs.clone(),
            next_tmp: AtomicU64::new(0),
            state: Mutex::new(state),
        };
        cache.evict(&mut cache.state.lock(), None);
        Ok(cache)
    }

    pub fn meta_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.meta"))
    }

    fn full_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.ftr"))
    }

    /// The whole footer file of segment `id` (`len` bytes), mapped: from memory, from its file,
    /// or from `fetch` (then written and counted). `valid` checks bytes read back from disk.
    pub fn get(
        &self,
        id: u64,
        len: u64,
        valid: impl Fn(&[u8]) -> bool,
        fetch: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Arc<Mapped>> {
        {
            let mut st = self.state.lock();
            st.tick += 1;
            let tick = st.tick;
            if let Some(e) = st.entries.get_mut(&id) {
                e.used_at = tick;
                if let Some(m) = &e.map {
                    return Ok(m.clone());
                }
            }
        }
        let path = self.full_path(id);
        if let Some(map) = self
            .map_file(&path)
            .filter(|m| m.len() as u64 == len && valid(m))
        {
            let map = Arc::new(map);
            self.insert(id, len, map.clone());
            return Ok(map);
        }
        let bytes = fetch()?;
        self.write(&path, &[&bytes])?;
        let map = self.map_file(&path).ok_or_else(|| crate::Error::Corrupt {
            segment: id,
            path: path.clone(),
            offset: 0,
            reason: "footer cache unreadable right after writing it".into(),
        })?;
        let map = Arc::new(map);
        self.insert(id, len, map.clone());
        Ok(map)
    }

    /// Writes the `.meta` file of segment `id`.
    pub fn put_meta(&self, id: u64, bytes: &[u8]) -> Result<()> {
        self.write(&self.meta_path(id), &[bytes])
    }

    /// Writes a cache file whole and durably (a local copy is dropped only after the footers
    /// that replace it are on disk), through a uniquely named temp file.
    fn write(&self, path: &Path, parts: &[&[u8]]) -> Result<()> {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("{n}.tmp"));
        self.fs.replace_file(path, &tmp, parts)
    }

    /// Puts the whole footer of `id` in the cache (a local copy about to be dropped).
    pub fn put(&self, id: u64, parts: &[&[u8]]) -> Result<()> {
        let path = self.full_path(id);
        self.write(&path, parts)?;
        let len = parts.iter().map(|p| p.len() as u64).sum();
        let mut st = self.state.lock();
        st.tick += 1;
        let tick = st.tick;
        if let Some(old) = st.entries.insert(
            id,
            Entry {
                used_at: tick,
                len,
                map: None,
            },
        ) {
            st.used -= old.len;
        }
        st.used += len;
        self.evict(&mut st, Some(id));
        Ok(())
    }

    fn insert(&self, id: u64, len: u64, map: Arc<Mapped>) {
        let mut st = self.state.lock();
        st.tick += 1;
        let tick = st.tick;
        let old = st.entries.insert(
            id,
            Entry {
                used_at: tick,
                len,
                map: Some(map),
            },
        );
        st.used = st.used - old.map(|o| o.len).unwrap_or(0) + len;
        self.evict(&mut st, Some(id));
    }

    /// Drops least recently used footers until the bound holds (never `keep`, just added).
    fn evict(&self, st: &mut State, keep: Option<u64>) {
        while st.used > self.limit {
            let victim = st
                .entries
                .iter()
                .filter(|(id, _)| Some(**id) != keep)
                .min_by_key(|(_, e)| e.used_at)
                .map(|(id, _)| *id);
            let Some(id) = victim else { break };
            if let Some(e) = st.entries.remove(&id) {
                st.used -= e.len;
                self.fs.remove_quietly(&self.full_path(id));
            }
        }
    }

    /// Forgets segment `id` (its object is gone): both files.
    pub fn forget(&self, id: u64) {
        let mut st = self.state.lock();
        if let Some(e) = st.entries.remove(&id) {
            st.used -= e.len;
        }
        self.fs.remove_quietly(&self.full_path(id));
        self.fs.remove_quietly(&self.meta_path(id));
    }

    /// The storage the cache's files are on (remote segments' scratch downloads use it too).
    pub fn fs(&self) -> &Fs {
        &self.fs
    }

    /// A cache file, mapped. Cache files are written whole and renamed into place, never
    /// modified; an evicted one is unlinked, which leaves existing mappings valid.
    fn map_file(&self, path: &Path) -> Option<Mapped> {
        self.fs.open(path, OpenMode::Read).ok()?.map().ok()
    }

    /// Bytes of whole footers on disk now.
    pub fn used_bytes(&self) -> u64 {
        self.state.lock().used
    }
}
