//! The systems `replaystore bench` measures side by side: this store, the zstd-only limit, and
//! the peers a user would pick instead (PostHog's v1 and v2 layouts, fjall, RocksDB).
//! Every system gets the same chunks from the same threads, and the same durability point: a
//! synced write per flush.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use replaystore::{Chunk, Store};

pub mod kv;

pub type Res<T> = io::Result<T>;

pub fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// A storage system under test. `t` is the ingest thread (each has its own flush windows).
pub trait System: Sync {
    fn name(&self) -> String;
    fn append(&self, t: usize, c: &Chunk) -> Res<()>;
    /// Makes everything thread `t` appended durable (one synced write per flush).
    fn flush(&self, t: usize) -> Res<()>;
    /// Reads a whole session; returns its payload bytes. `None`: the system cannot read.
    fn read(&self, team: u64, session: &str) -> Res<Option<usize>>;
    fn disk_bytes(&self) -> u64;
}

/// Chunks of one flush window, grouped per session in arrival order.
#[derive(Default)]
pub struct Window {
    groups: Vec<((u64, String), Vec<u8>)>,
    at: HashMap<(u64, String), usize>,
}

impl Window {
    fn push(&mut self, c: &Chunk) {
        let key = (c.team, c.session_id.clone());
        let i = *self.at.entry(key.clone()).or_insert_with(|| {
            self.groups.push((key, Vec::new()));
            self.groups.len() - 1
        });
        self.groups[i].1.extend_from_slice(&c.payload);
    }
    fn take(&mut self) -> Vec<((u64, String), Vec<u8>)> {
        self.at.clear();
        std::mem::take(&mut self.groups)
    }
}

fn windows(threads: usize) -> Vec<Mutex<Window>> {
    (0..threads)
        .map(|_| Mutex::new(Window::default()))
        .collect()
}

pub fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        dir_bytes(&p)
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// This store.
pub struct ReplayStore {
    pub store: Store,
}

impl System for ReplayStore {
    fn name(&self) -> String {
        "replaystore".into()
    }
    fn append(&self, _t: usize, c: &Chunk) -> Res<()> {
        self.store.append(c.clone()).map_err(io_err)
    }
    fn flush(&self, _t: usize) -> Res<()> {
        self.store.flush().map_err(io_err)
    }
    fn read(&self, team: u64, session: &str) -> Res<Option<usize>> {
        let s = self.store.read_session(team, session).map_err(io_err)?;
        Ok(Some(s.map_or(0, |s| {
            s.chunks.iter().map(|c| c.payload.len()).sum()
        })))
    }
    fn disk_bytes(&self) -> u64 {
        self.store.stats().map(|s| s.bytes_on_disk).unwrap_or(0)
    }
}

/// The limit: zstd alone on the same per-session groups, same level, same threads, no I/O.
pub struct ZstdOnly {
    pub level: i32,
    windows: Vec<Mutex<Window>>,
    out: Mutex<u64>,
}

impl ZstdOnly {
    pub fn new(level: i32, threads: usize) -> Self {
        ZstdOnly {
            level,
            windows: windows(threads),
            out: Mutex::new(0),
        }
    }
}

impl System for ZstdOnly {
    fn name(&self) -> String {
        format!("zstd-{} only (limit)", self.level)
    }
    fn append(&self, t: usize, c: &Chunk) -> Res<()> {
        self.windows[t].lock().push(c);
        Ok(())
    }
    fn flush(&self, t: usize) -> Res<()> {
        let groups = self.windows[t].lock().take();
        let mut n = 0;
        for (_, raw) in groups {
            n += zstd::bulk::compress(&raw, self.level)?.len() as u64;
        }
        *self.out.lock() += n;
        Ok(())
    }
    fn read(&self, _: u64, _: &str) -> Res<Option<usize>> {
        Ok(None)
    }
    fn disk_bytes(&self) -> u64 {
        *self.out.lock()
    }
}

/// PostHog v1 style: one gzip file per session per flush, each synced.
pub struct V1Gzip {
    dir: PathBuf,
    windows: Vec<Mutex<Window>>,
    files: Mutex<HashMap<(u64, String), Vec<PathBuf>>>,
    counter: std::sync::atomic::AtomicU64,
}

impl V1Gzip {
    pub fn new(dir: &Path, threads: usize) -> Res<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(V1Gzip {
            dir: dir.to_path_buf(),
            windows: windows(threads),
            files: Mutex::new(HashMap::new()),
            counter: Default::default(),
        })
    }
}

impl System for V1Gzip {
    fn name(&self) -> String {
        "PostHog v1 style (gzip file per session flush)".into()
    }
    fn append(&self, t: usize, c: &Chunk) -> Res<()> {
        self.windows[t].lock().push(c);
        Ok(())
    }
    fn flush(&self, t: usize) -> Res<()> {
        let groups = self.windows[t].lock().take();
        for (key, raw) in groups {
            let n = self
                .counter
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = self.dir.join(format!("{n}.json.gz"));
            let mut gz =
                flate2::write::GzEncoder::new(File::create(&path)?, flate2::Compression::default());
            gz.write_all(&raw)?;
            gz.finish()?.sync_data()?;
            self.files.lock().entry(key).or_default().push(path);
        }
        Ok(())
    }
    fn read(&self, team: u64, session: &str) -> Res<Option<usize>> {
        let files = self
            .files
            .lock()
            .get(&(team, session.to_string()))
            .cloned()
            .unwrap_or_default();
        let mut n = 0;
        for f in files {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(File::open(f)?).read_to_end(&mut out)?;
            n += out.len();
        }
        Ok(Some(n))
    }
    fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.dir)
    }
}

type BlockAt = (PathBuf, u64, usize);

/// PostHog v2 style: one batch file per flush holding one snappy block per session, synced once.
pub struct V2Snappy {
    dir: PathBuf,
    windows: Vec<Mutex<Window>>,
    /// Where each session's blocks are: (batch file, offset, length).
    index: Mutex<HashMap<(u64, String), Vec<BlockAt>>>,
    counter: std::sync::atomic::AtomicU64,
}

impl V2Snappy {
    pub fn new(dir: &Path, threads: usize) -> Res<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(V2Snappy {
            dir: dir.to_path_buf(),
            windows: windows(threads),
            index: Mutex::new(HashMap::new()),
            counter: Default::default(),
        })
    }
}

impl System for V2Snappy {
    fn name(&self) -> String {
        "PostHog v2 style (snappy batch per flush)".into()
    }
    fn append(&self, t: usize, c: &Chunk) -> Res<()> {
        self.windows[t].lock().push(c);
        Ok(())
    }
    fn flush(&self, t: usize) -> Res<()> {
        let groups = self.windows[t].lock().take();
        if groups.is_empty() {
            return Ok(());
        }
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir.join(format!("{n}.batch"));
        let mut batch = Vec::new();
        let mut entries = Vec::new();
        let mut enc = snap::raw::Encoder::new();
        for (key, raw) in groups {
            let block = enc.compress_vec(&raw).map_err(io_err)?;
            entries.push((key, batch.len() as u64, block.len()));
            batch.extend_from_slice(&block);
        }
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        f.write_all_at(&batch, 0)?;
        f.sync_data()?;
        let mut index = self.index.lock();
        for (key, off, len) in entries {
            index.entry(key).or_default().push((path.clone(), off, len));
        }
        Ok(())
    }
    fn read(&self, team: u64, session: &str) -> Res<Option<usize>> {
        let refs = self
            .index
            .lock()
            .get(&(team, session.to_string()))
            .cloned()
            .unwrap_or_default();
        let mut dec = snap::raw::Decoder::new();
        let mut n = 0;
        for (path, off, len) in refs {
            let mut buf = vec![0u8; len];
            File::open(path)?.read_exact_at(&mut buf, off)?;
            n += dec.decompress_vec(&buf).map_err(io_err)?.len();
        }
        Ok(Some(n))
    }
    fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.dir)
    }
}
