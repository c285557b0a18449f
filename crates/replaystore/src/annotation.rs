//! Annotations: what an embedder's `Annotator` says about the chunks of a block (clicks, errors,
//! URLs... for a recording), kept with the block, merged per session in the footers, and handed
//! back with listings so that sessions can be found without reading payloads.
//!
//! The bytes are the annotator's, opaque to the engine. The contract (docs/format.md,
//! "Annotations"): 1 to `MAX_ANNOTATION_BYTES` bytes, the first being the annotator's own format
//! version; the engine checksums them (the block crc, the footer record's crc) and never looks
//! inside. `replaystore_posthog::RrwebAnnotator` is an example: PostHog's session summaries.

use crate::chunk::Chunk;

pub use crate::format::{Annotation, Facets, MAX_ANNOTATION_BYTES};

/// What the store did to a block's chunks that an annotator may want to record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockContext {
    /// The clock-skew correction applied to the chunks' timestamps (store clock minus the
    /// client's at send time), the largest in magnitude if it varied; 0 when none.
    pub clock_offset_ms: i64,
}

/// One part of a session's annotation, with the time that part starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnotationPart<'a> {
    pub first_ts_ms: i64,
    pub bytes: &'a [u8],
}

/// Computes and merges annotations. The engine calls `analyze` on the flush path (off every
/// lock) with the chunks of one block as sent (before any payload transform), and `merge` when
/// it needs one annotation for several parts of a session: sealing a segment, regrouping,
/// listing, reading.
pub trait Annotator: Send + Sync + std::fmt::Debug {
    /// A short name, for logs.
    fn name(&self) -> &'static str;
    /// The annotation of one block's chunks (one session, in append order); `None` for none.
    fn analyze(&self, chunks: &[Chunk], ctx: &BlockContext) -> Option<Vec<u8>>;
    /// One annotation for several parts, given in time order (by `first_ts_ms`, then in the
    /// order they were written).
    fn merge(&self, parts: &[AnnotationPart<'_>]) -> Vec<u8>;
    /// Whether `chunk` holds a *keyframe*, a point from which the session can be played
    /// without what came before (for rrweb: a meta event followed by a full snapshot), and the
    /// SDK time of its first one, in the chunk's own clock (the store adds the skew correction
    /// it applied to the chunk's timestamps). Called on the flush path with `analyze`; the
    /// store records the answer per chunk (block header, footer) so that
    /// `Store::read_session_from` can start from it. Default: no keyframes (a ranged read is a
    /// whole read).
    fn keyframe(&self, chunk: &Chunk) -> Option<i64> {
        let _ = chunk;
        None
    }
    /// What the session index keeps of a merged annotation so that listings filter without
    /// decoding it (docs/design.md, "The session index"): numbers the annotator names by
    /// position, and texts. The default keeps nothing (filters then read the annotation).
    fn facets(&self, annotation: &[u8]) -> Facets {
        let _ = annotation;
        Facets::default()
    }
}

/// Which annotations a listing keeps (`SessionFilter::annotation`). A session with no
/// annotation (none written, or parts that could not be merged: see `merge_parts`) is passed
/// `None`.
pub trait AnnotationFilter: Send + Sync + std::fmt::Debug {
    fn matches(&self, annotation: Option<&[u8]>) -> bool;
    /// The same decision from the facets `annotator` (its `Annotator::name`) made of the
    /// annotation, when this filter can take it from them; `None` sends the listing back to
    /// `matches`. Must agree with `matches` (the session index relies on it).
    fn matches_facets(&self, annotator: &str, facets: &Facets) -> Option<bool> {
        let _ = (annotator, facets);
        None
    }
}

/// Keeps an annotation the contract allows (1 to `MAX_ANNOTATION_BYTES` bytes); drops another
/// with a warning: an annotation is an index of the payloads, which are stored whatever it says,
/// so a misbehaving annotator costs the index entry, never an append.
pub(crate) fn checked(annotator: &dyn Annotator, bytes: Vec<u8>) -> Option<Vec<u8>> {
    if (1..=MAX_ANNOTATION_BYTES).contains(&bytes.len()) {
        return Some(bytes);
    }
    log::warn!(
        "annotator {} produced {} bytes (allowed: 1 to {MAX_ANNOTATION_BYTES}); dropped",
        annotator.name(),
        bytes.len()
    );
    None
}

/// The annotator's annotation of a block, if it is within the contract.
pub(crate) fn analyze(a: &dyn Annotator, chunks: &[Chunk], ctx: &BlockContext) -> Option<Vec<u8>> {
    checked(a, a.analyze(chunks, ctx)?)
}

/// One annotation for several parts of a session. No part: none. One part: itself, unchanged.
/// Several: the annotator's merge of them in time order; without an annotator, none: the engine
/// cannot merge what it cannot read, and picking one part would report a part as the whole (the
/// parts themselves stay in their blocks, where a later regroup with an annotator finds them).
pub(crate) fn merge_parts(
    annotator: Option<&dyn Annotator>,
    mut parts: Vec<Annotation>,
) -> Option<Annotation> {
    if parts.len() <= 1 {
        return parts.pop();
    }
    let a = annotator?;
    // Stable: parts of the same time keep the order they were written in.
    parts.sort_by_key(|p| p.first_ts_ms);
    let borrowed: Vec<AnnotationPart<'_>> = parts
        .iter()
        .map(|p| AnnotationPart {
            first_ts_ms: p.first_ts_ms,
            bytes: &p.bytes,
        })
        .collect();
    let bytes = checked(a, a.merge(&borrowed))?;
    Some(Annotation {
        first_ts_ms: parts[0].first_ts_ms,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Concatenates its parts after a version byte: shows the order it was given.
    #[derive(Debug)]
    struct Concat;

    impl Annotator for Concat {
        fn name(&self) -> &'static str {
            "concat"
        }
        fn analyze(&self, chunks: &[Chunk], _: &BlockContext) -> Option<Vec<u8>> {
            (!chunks.is_empty()).then(|| vec![1; MAX_ANNOTATION_BYTES + chunks.len()])
        }
        fn merge(&self, parts: &[AnnotationPart<'_>]) -> Vec<u8> {
            let mut out = vec![1];
            for p in parts {
                out.extend_from_slice(&p.bytes[1..]);
            }
            out
        }
    }

    fn part(ts: i64, b: &[u8]) -> Annotation {
        Annotation {
            first_ts_ms: ts,
            bytes: b.to_vec(),
        }
    }

    #[test]
    fn parts_merge_in_time_order_and_only_with_an_annotator() {
        let parts = vec![
            part(20, &[1, b'b']),
            part(10, &[1, b'a']),
            part(20, &[1, b'c']),
        ];
        let merged = merge_parts(Some(&Concat), parts.clone()).unwrap();
        assert_eq!(merged, part(10, &[1, b'a', b'b', b'c']));
        assert_eq!(
            merge_parts(None, parts),
            None,
            "several parts, no annotator"
        );
        assert_eq!(merge_parts(None, vec![part(5, &[1])]), Some(part(5, &[1])));
        assert_eq!(merge_parts(Some(&Concat), Vec::new()), None);
    }

    #[test]
    fn annotations_out_of_bounds_are_dropped() {
        let chunk = Chunk {
            team: 1,
            session_id: "s".into(),
            person: "p".into(),
            window_id: None,
            first_ts_ms: 0,
            last_ts_ms: 0,
            sent_at_ms: None,
            payload: Vec::new(),
        };
        let ctx = BlockContext::default();
        assert_eq!(analyze(&Concat, &[chunk], &ctx), None, "over 64 KiB");
        assert_eq!(checked(&Concat, Vec::new()), None, "empty");
        assert_eq!(checked(&Concat, vec![1; 3]), Some(vec![1; 3]));
    }
}
