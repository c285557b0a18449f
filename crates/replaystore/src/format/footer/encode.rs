//! Writing a footer (the layout is in the parent module's comment).

use super::{FooterTotals, SessionEntry, BLOCK_REF_LEN, FOOTER_FIXED_LEN};
use crate::format::bloom::{Bloom, BLOOM_K};
use crate::format::{key_hash, put_i64, put_u32, put_u64, MAX_ANNOTATION_BYTES};

/// Encodes a footer. Returns the bytes and the crc the trailer must carry.
pub fn encode_footer(
    sessions: &mut [SessionEntry],
    totals: FooterTotals,
    replaces: &[u64],
) -> (Vec<u8>, u32) {
    sessions.sort_by(|a, b| {
        let key = |e: &SessionEntry| {
            let hash = key_hash(e.team, &e.session);
            (e.team, hash, e.session.clone(), e.person.clone())
        };
        key(a).cmp(&key(b))
    });
    let ref_count: usize = sessions.iter().map(|s| s.blocks.len()).sum();
    let heap_len: usize = sessions
        .iter()
        .map(|s| s.session.len() + s.person.len())
        .sum();
    let bloom = Bloom::build(
        sessions.iter().map(|s| key_hash(s.team, &s.session)),
        sessions.len(),
    );

    let (offsets, records) = encode_annotations(sessions);
    let annotations_len = (offsets.len() + records.len()) as u32;
    let seek = super::seek::encode_seek(sessions);
    let mut out = Vec::new();
    put_u32(&mut out, sessions.len() as u32);
    put_u32(&mut out, ref_count as u32);
    put_u32(&mut out, bloom.words.len() as u32);
    put_u32(&mut out, BLOOM_K);
    put_u32(&mut out, replaces.len() as u32);
    put_u32(&mut out, heap_len as u32);
    put_i64(&mut out, totals.min_ts);
    put_i64(&mut out, totals.max_ts);
    put_u64(&mut out, totals.chunk_count);
    put_u64(&mut out, totals.raw_bytes);
    put_u64(&mut out, totals.stored_bytes);
    put_u64(&mut out, totals.block_count);
    put_u64(&mut out, totals.max_seq);
    put_u32(&mut out, totals.flags);
    put_u32(&mut out, annotations_len);
    put_i64(&mut out, totals.min_arrival_ms);
    put_i64(&mut out, totals.max_arrival_ms);
    put_u32(&mut out, seek.len() as u32);
    out.resize(FOOTER_FIXED_LEN, 0);
    for w in &bloom.words {
        put_u64(&mut out, *w);
    }
    for id in replaces {
        put_u64(&mut out, *id);
    }
    let meta_crc = crc32fast::hash(&out);

    let (refs, heap) = encode_entries(sessions, ref_count, heap_len, &mut out);
    out.extend_from_slice(&refs);
    out.extend_from_slice(&heap);
    out.extend_from_slice(&offsets);
    out.extend_from_slice(&records);
    out.extend_from_slice(&seek);
    (out, meta_crc)
}

/// Appends the session records to `out`; returns the block references and the string heap
/// they point into.
fn encode_entries(
    sessions: &[SessionEntry],
    ref_count: usize,
    heap_len: usize,
    out: &mut Vec<u8>,
) -> (Vec<u8>, Vec<u8>) {
    let mut refs = Vec::with_capacity(ref_count * BLOCK_REF_LEN);
    let mut heap = Vec::with_capacity(heap_len);
    for s in sessions.iter() {
        let first_ref = refs.len() / BLOCK_REF_LEN;
        let ref_start = refs.len();
        for b in &s.blocks {
            put_u64(&mut refs, b.offset);
            put_u32(&mut refs, b.len);
            put_u32(&mut refs, b.chunks);
            put_i64(&mut refs, b.arrival.first_ms);
            put_i64(&mut refs, b.arrival.last_ms);
        }
        let heap_offset = heap.len();
        heap.extend_from_slice(s.session.as_bytes());
        heap.extend_from_slice(s.person.as_bytes());
        let e_start = out.len();
        put_u64(out, s.team);
        put_u64(out, key_hash(s.team, &s.session));
        put_u64(out, key_hash(s.team, &s.person));
        put_i64(out, s.first_ts);
        put_i64(out, s.last_ts);
        put_u64(out, s.raw_bytes);
        put_u64(out, s.stored_bytes);
        put_u32(out, s.chunk_count);
        put_u32(out, first_ref as u32);
        put_u32(out, s.blocks.len() as u32);
        put_u32(out, heap_offset as u32);
        out.push(s.session.len() as u8);
        out.push(0);
        out.extend_from_slice(&(s.person.len() as u16).to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&out[e_start..]);
        h.update(&refs[ref_start..]);
        h.update(&heap[heap_offset..]);
        put_u32(out, h.finalize());
    }
    (refs, heap)
}

/// The annotations section: one offset per session, then the records (length, crc, bytes).
/// An entry with no annotation, or with parts its writer could not merge, gets an empty record.
fn encode_annotations(sessions: &[SessionEntry]) -> (Vec<u8>, Vec<u8>) {
    let mut records = Vec::new();
    let mut offsets = Vec::with_capacity(sessions.len() * 4);
    for s in sessions {
        put_u32(&mut offsets, records.len() as u32);
        let bytes = match s.annotations.as_slice() {
            [one] if one.bytes.len() <= MAX_ANNOTATION_BYTES => one.bytes.as_slice(),
            _ => &[],
        };
        put_u32(&mut records, bytes.len() as u32);
        put_u32(&mut records, crc32fast::hash(bytes));
        records.extend_from_slice(bytes);
    }
    (offsets, records)
}
