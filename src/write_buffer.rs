//! The write buffer: chunks appended since the last flush, in shards chosen by session so that
//! appends for different sessions rarely contend, and one session's chunks stay in append order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::chunk::Chunk;
use crate::format::key_hash;

pub(crate) struct WriteBuffer {
    shards: Vec<Mutex<Vec<Chunk>>>,
    bytes: AtomicUsize,
}

impl WriteBuffer {
    pub fn new(shards: usize) -> Self {
        WriteBuffer {
            shards: (0..shards.max(1)).map(|_| Mutex::new(Vec::new())).collect(),
            bytes: AtomicUsize::new(0),
        }
    }

    fn shard(&self, c: &Chunk) -> &Mutex<Vec<Chunk>> {
        let h = key_hash(c.team, &c.session_id);
        &self.shards[(h % self.shards.len() as u64) as usize]
    }

    /// Adds a validated chunk; returns the bytes now buffered.
    pub fn push(&self, c: Chunk) -> usize {
        let n = c.buffered_bytes();
        self.shard(&c).lock().push(c);
        self.bytes.fetch_add(n, Ordering::AcqRel) + n
    }

    pub fn buffered_bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// Takes everything buffered, grouped by (team, session): each group in append order,
    /// groups in order of their first chunk within a shard.
    pub fn drain_groups(&self) -> Vec<Vec<Chunk>> {
        let mut groups: Vec<Vec<Chunk>> = Vec::new();
        let mut drained = 0usize;
        for shard in &self.shards {
            let chunks = std::mem::take(&mut *shard.lock());
            let mut at: HashMap<(u64, String), usize> = HashMap::new();
            for c in chunks {
                drained += c.buffered_bytes();
                let key = (c.team, c.session_id.clone());
                match at.get(&key) {
                    Some(&i) => groups[i].push(c),
                    None => {
                        at.insert(key, groups.len());
                        groups.push(vec![c]);
                    }
                }
            }
        }
        self.bytes.fetch_sub(drained, Ordering::AcqRel);
        groups
    }

    /// Removes buffered chunks matching `pred` (a deletion purges what is not yet written);
    /// returns how many.
    pub fn purge(&self, pred: impl Fn(&Chunk) -> bool) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut chunks = shard.lock();
            let before = chunks.len();
            let mut freed = 0;
            chunks.retain(|c| {
                let gone = pred(c);
                if gone {
                    freed += c.buffered_bytes();
                }
                !gone
            });
            removed += before - chunks.len();
            self.bytes.fetch_sub(freed, Ordering::AcqRel);
        }
        removed
    }

    /// Puts back groups a failed flush could not make durable, ahead of anything appended since,
    /// so that a later flush writes them in their original order.
    pub fn requeue(&self, groups: Vec<Vec<Chunk>>) {
        for g in groups {
            let Some(first) = g.first() else { continue };
            let n: usize = g.iter().map(Chunk::buffered_bytes).sum();
            let mut shard = self.shard(first).lock();
            let newer = std::mem::take(&mut *shard);
            shard.extend(g);
            shard.extend(newer);
            self.bytes.fetch_add(n, Ordering::AcqRel);
        }
    }
}
