//! The remote tier's public face on `Store`.

use super::manifest::State;
use super::sync::SyncReport;
use super::tier::TierStats;
use crate::error::Result;
use crate::store::Store;

/// Where the remote tier stands (`Store::remote_status`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RemoteStatus {
    pub url: String,
    /// Segments uploaded and verified (with or without a local copy).
    pub verified: u64,
    /// Of those, held only in the bucket.
    pub remote_only: u64,
    /// Uploads started and not verified yet (resumed by the next sync).
    pub uploading: u64,
    /// Objects waiting to be deleted (expired, or replaced by a compaction).
    pub doomed: u64,
    /// Bytes of whole footers in the local cache (bounded by `footer_cache_bytes`).
    pub footer_cache_bytes: u64,
    /// Requests made since open.
    pub requests: TierStats,
}

impl Store {
    /// Runs the remote tier now: uploads and verifies every sealed segment not yet in the
    /// bucket (resuming interrupted uploads), drops local copies past `local_retention`,
    /// deletes objects of expired or replaced segments, uploads the tombstone log. The
    /// maintenance thread does the same every `maintenance_interval`. No-op without a tier.
    ///
    /// To hand a store over to another machine: stop appending, `seal_active()`,
    /// `sync_remote()`, `close()`; then open an empty directory there with the same
    /// `RemoteConfig` (docs/scale-out.md).
    pub fn sync_remote(&self) -> Result<SyncReport> {
        self.maintenance.remote_sync()
    }

    /// The remote tier's state and request counters; `None` without a tier.
    pub fn remote_status(&self) -> Option<RemoteStatus> {
        let remote = self.remote.as_deref()?;
        let mut st = RemoteStatus {
            url: remote.tier.url.clone(),
            requests: remote.tier.stats(),
            footer_cache_bytes: remote.cache.used_bytes(),
            ..RemoteStatus::default()
        };
        for e in remote.manifest.lock().entries.values() {
            match e.state {
                State::Verified => st.verified += 1,
                State::Uploading(_) => st.uploading += 1,
                State::Doomed { .. } => st.doomed += 1,
            }
        }
        st.remote_only = self
            .segments
            .current()
            .segments()
            .iter()
            .filter(|s| s.is_remote())
            .count() as u64;
        Some(st)
    }
}

/// One object of the bucket (`bucket_objects`).
#[derive(Debug, Clone)]
pub struct BucketObject {
    pub key: String,
    pub size: u64,
    pub bytes: Option<Vec<u8>>,
}

/// Every object under the tier's prefix, with its bytes when `with_bytes` is set: what an
/// auditor (or the canary test) reads to check that a person's bytes are gone from the bucket.
pub fn bucket_objects(config: &super::RemoteConfig, with_bytes: bool) -> Result<Vec<BucketObject>> {
    let tier = super::tier::Tier::open(config.clone())?;
    let mut out = Vec::new();
    for o in tier.list("")? {
        let bytes = if with_bytes {
            tier.get_small(&o.location, o.size)?.map(|b| b.to_vec())
        } else {
            None
        };
        out.push(BucketObject {
            key: o.location.to_string(),
            size: o.size,
            bytes,
        });
    }
    Ok(out)
}
