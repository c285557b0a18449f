//! The write buffer: chunks appended since the last flush, in shards chosen by session so that
//! appends for different sessions rarely contend, and one session's chunks stay in append order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::chunk::{Chunk, Group, Stamped};
use crate::format::key_hash;

pub(crate) struct WriteBuffer {
    shards: Vec<Mutex<Vec<Stamped>>>,
    bytes: AtomicUsize,
}

impl WriteBuffer {
    pub fn new(shards: usize) -> Self {
        WriteBuffer {
            shards: (0..shards.max(1)).map(|_| Mutex::new(Vec::new())).collect(),
            bytes: AtomicUsize::new(0),
        }
    }

    fn shard(&self, c: &Chunk) -> &Mutex<Vec<Stamped>> {
        let h = key_hash(c.team, &c.session_id);
        &self.shards[(h % self.shards.len() as u64) as usize]
    }

    /// Adds a validated chunk; returns the bytes now buffered.
    pub fn push(&self, c: Stamped) -> usize {
        let n = c.buffered_bytes();
        self.shard(&c.chunk).lock().push(c);
        self.bytes.fetch_add(n, Ordering::AcqRel) + n
    }

    pub fn buffered_bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// Takes everything buffered, grouped by (team, session): each group in append order,
    /// groups in order of their first chunk within a shard.
    pub fn drain_groups(&self) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        let mut drained = 0usize;
        for shard in &self.shards {
            let chunks = std::mem::take(&mut *shard.lock());
            let mut at: HashMap<(u64, String), usize> = HashMap::new();
            for c in chunks {
                drained += c.buffered_bytes();
                let key = (c.chunk.team, c.chunk.session_id.clone());
                let i = *at.entry(key).or_insert_with(|| {
                    groups.push(Group::default());
                    groups.len() - 1
                });
                groups[i].push(c);
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
                let gone = pred(&c.chunk);
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
    pub fn requeue(&self, groups: Vec<Group>) {
        for g in groups {
            let chunks: Vec<Stamped> = g.into_stamped().collect();
            let Some(first) = chunks.first() else {
                continue;
            };
            let n: usize = chunks.iter().map(Stamped::buffered_bytes).sum();
            let mut shard = self.shard(&first.chunk).lock();
            let newer = std::mem::take(&mut *shard);
            shard.extend(chunks);
            shard.extend(newer);
            self.bytes.fetch_add(n, Ordering::AcqRel);
        }
    }
}
