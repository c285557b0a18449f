//! The configuration posthog-js recordings are stored with: the measured best point of the
//! (hot level, regroup level, where normalization runs) table in docs/benchmarks.md.

use std::sync::Arc;

use replaystore::Config;

/// zstd level of regrouped blocks for posthog-js data. On the docs capture, level 3 keeps
/// 0.29x the PostHog-v2 layout's bytes per session at ~3.5x its CPU per GB over a byte's life
/// (ingest + regroup); level 9 keeps 0.23x at ~7.7x; levels 2-4 are within 1% of each other.
pub const REGROUP_LEVEL: i32 = 3;

/// `base` with the rrweb annotator (session summaries), the posthog-js normalization applied
/// when an idle session is regrouped (not on the flush path: inflating there halves the burst
/// ingest rate for the same bytes at rest), and regrouped blocks at `REGROUP_LEVEL`.
pub fn configure(base: Config) -> Config {
    base.with_annotator(Some(Arc::new(crate::RrwebAnnotator)))
        .with_transform(Arc::new(crate::Normalize), false)
        .with_regroup_level(REGROUP_LEVEL)
}
