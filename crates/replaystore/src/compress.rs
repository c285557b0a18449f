//! The CPU half of a flush round: cutting buffered sessions into block-sized groups and
//! encoding (compressing) them on several threads, with no lock held.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use crate::annotation::{self, BlockContext};
use crate::chunk::{Chunk, Group, Stamp};
use crate::config::Config;
use crate::format::{block, BlockHeader, BlockWriter, MAX_BLOCK_RAW};

/// A block is cut when a session's buffered chunks exceed this many raw bytes (or chunks).
const BLOCK_TARGET_RAW: usize = 64 << 20;
/// Below 65,535 so that a block's window indexes never reach the "no window" marker 0xFFFF.
const BLOCK_MAX_CHUNKS: usize = 65_000;

/// An encoded block and its parsed header.
pub(crate) type Encoded = (Vec<u8>, BlockHeader);

/// Splits sessions whose buffered chunks exceed a block's target size into several groups.
pub(crate) fn split_groups(groups: Vec<Group>) -> Vec<Group> {
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let mut cur = Group::default();
        let mut raw = 0usize;
        for c in g.into_stamped() {
            let n = c.chunk.payload.len();
            // A block has one person: a person that changes mid-session (an SDK that identifies
            // its user late) starts a new block, so every block is indexed under its true person.
            let person_changed = cur
                .chunks
                .last()
                .is_some_and(|p: &Chunk| p.person != c.chunk.person);
            if !cur.is_empty()
                && (raw + n > BLOCK_TARGET_RAW || cur.len() >= BLOCK_MAX_CHUNKS || person_changed)
            {
                out.push(std::mem::take(&mut cur));
                raw = 0;
            }
            raw += n;
            cur.push(c);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
    }
    debug_assert!(out
        .iter()
        .all(|g| g.raw_bytes() <= MAX_BLOCK_RAW.max(BLOCK_TARGET_RAW)));
    out
}

/// Encodes one block per group on up to `compression_threads` threads (no lock held). With a
/// `transform` to apply at ingest, payloads are transformed first (and the block flagged).
pub(crate) fn compress_all(
    groups: &[Group],
    seq: u64,
    config: &Config,
) -> std::io::Result<Vec<Encoded>> {
    let transform = config
        .parts
        .transform
        .as_ref()
        .filter(|_| config.transform_at_ingest);
    // Biggest groups first, so that no thread is left compressing one big session alone at
    // the end of the round (longest-processing-time-first scheduling).
    let size = |g: &Group| g.raw_bytes();
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(size(&groups[i])));
    let encoded = parallel_map(
        &order,
        config.compression_threads,
        || BlockWriter::new(config.compression_level),
        |w, &i| {
            let g = &groups[i];
            let note = block_annotation(config, g);
            let stamps = keyframe_stamps(config, g);
            match transform {
                None => encode(w, seq, 0, note.as_deref(), &g.chunks, &stamps),
                Some(t) => {
                    let (chunks, changed) = transform_chunks(t.as_ref(), g.chunks.to_vec());
                    let flags = if changed { block::BLOCK_TRANSFORMED } else { 0 };
                    encode(w, seq, flags, note.as_deref(), &chunks, &stamps)
                }
            }
        },
    )?;
    // Back in the groups' order.
    let mut slots: Vec<Option<Encoded>> = (0..groups.len()).map(|_| None).collect();
    for (i, e) in order.into_iter().zip(encoded) {
        slots[i] = Some(e);
    }
    Ok(slots.into_iter().flatten().collect())
}

/// The annotation of a block: the annotator's, computed on the chunks as sent (before any
/// transform), told the clock-skew correction the store applied to them. None without an
/// annotator.
fn block_annotation(config: &Config, g: &Group) -> Option<Vec<u8>> {
    let annotator = config.parts.annotator.as_deref()?;
    let clock_offset_ms = g
        .stamps
        .iter()
        .map(|s| s.clock_offset_ms)
        .max_by_key(|o| o.unsigned_abs())
        .unwrap_or(0);
    annotation::analyze(annotator, &g.chunks, &BlockContext { clock_offset_ms })
}

/// The group's stamps with the keyframes the annotator finds in its chunks (as sent, like
/// `analyze`), moved to the store's clock by each chunk's skew correction. Unchanged without an
/// annotator.
fn keyframe_stamps<'g>(config: &Config, g: &'g Group) -> Cow<'g, [Stamp]> {
    let Some(annotator) = config.parts.annotator.as_deref() else {
        return Cow::Borrowed(&g.stamps);
    };
    let stamps = g
        .chunks
        .iter()
        .zip(&g.stamps)
        .map(|(c, s)| Stamp {
            keyframe_ms: annotator
                .keyframe(c)
                .map(|ts| ts.saturating_add(s.clock_offset_ms)),
            ..*s
        })
        .collect();
    Cow::Owned(stamps)
}

/// Cuts a session's chunks (in playback order) into groups that start at a keyframe once the
/// group before holds at least `min_raw` payload bytes: a read from a keyframe then
/// decompresses from about there, not from the session's start (`Store::read_session_from`).
/// `None` (or 0 with no keyframe) keeps one group.
pub(crate) fn cut_at_keyframes(g: Group, min_raw: Option<usize>) -> Vec<Group> {
    let Some(min_raw) = min_raw else {
        return vec![g];
    };
    let mut out = Vec::new();
    let (mut cur, mut raw) = (Group::default(), 0usize);
    for c in g.into_stamped() {
        if c.stamp.keyframe_ms.is_some() && !cur.is_empty() && raw >= min_raw {
            out.push(std::mem::take(&mut cur));
            raw = 0;
        }
        raw += c.chunk.payload.len();
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Applies a payload transform to each chunk; says whether any payload changed.
pub(crate) fn transform_chunks(
    t: &dyn crate::config::PayloadTransform,
    mut chunks: Vec<Chunk>,
) -> (Vec<Chunk>, bool) {
    let mut changed = false;
    for c in &mut chunks {
        if let Some(p) = t.transform(&c.payload) {
            c.payload = p;
            changed = true;
        }
    }
    (chunks, changed)
}

/// Encodes one block and parses its header back: the index needs the header, and parsing
/// checks the encoder.
pub(crate) fn encode(
    w: &mut BlockWriter,
    seq: u64,
    flags: u8,
    annotation: Option<&[u8]>,
    chunks: &[Chunk],
    stamps: &[crate::format::Stamp],
) -> std::io::Result<Encoded> {
    let mut out = Vec::new();
    w.encode_full(seq, flags, annotation, chunks, stamps, &mut out)?;
    let h = block::parse_block(&out).map_err(|e| std::io::Error::other(e.0))?;
    Ok((out, h))
}

/// `f` over `items` on up to `threads` scoped threads, each with its own state from `init`
/// (a zstd context); results in the order of `items`. The first error wins.
pub(crate) fn parallel_map<T: Sync, S, R: Send>(
    items: &[T],
    threads: usize,
    init: impl Fn() -> std::io::Result<S> + Sync,
    f: impl Fn(&mut S, &T) -> std::io::Result<R> + Sync,
) -> std::io::Result<Vec<R>> {
    let threads = threads.min(items.len()).max(1);
    if threads == 1 {
        let mut state = init()?;
        return items.iter().map(|x| f(&mut state, x)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::io::Result<Vec<(usize, R)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut state = init()?;
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= items.len() {
                            return Ok(mine);
                        }
                        mine.push((i, f(&mut state, &items[i])?));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("worker thread panicked")))
            })
            .collect()
    });
    let mut slots: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    for r in results {
        for (i, x) in r? {
            slots[i] = Some(x);
        }
    }
    slots
        .into_iter()
        .map(|s| s.ok_or_else(|| std::io::Error::other("item not processed")))
        .collect()
}
