//! The remote tier: sealed segments copied to object storage (S3 and the like), their local
//! copies dropped once `local_retention` passes, and reads of remote segments by byte range.
//!
//! - `tier`: `RemoteTier`, the component: it owns the tier's state and lock (see there).
//! - `objects`: the bucket as remote segments read it (client, footer cache, scratch space).
//! - `client`: the object-store client (uploads with resume, verified; range reads; deletes).
//! - `manifest`: the local record of what is uploaded and what must be deleted remotely.
//! - `footer_cache`: remote segments' footers on local disk, the whole ones bounded (LRU).
//! - `sync`: one pass that uploads, verifies, drops local copies and deletes superseded objects.
//! - `adopt`: opening a store from the bucket alone.
//!
//! docs/scale-out.md describes the deployment; docs/format.md the manifest and object layout.

mod adopt;
mod api;
mod backend;
mod client;
mod footer_cache;
mod manifest;
mod objects;
mod sync;
mod tier;

use std::sync::Arc;
use std::time::Duration;

pub use api::{bucket_objects, Bucket, BucketObject, RemoteStatus, MAX_SMALL_OBJECT_BYTES};
pub use client::TierStats;
pub use manifest::UploadProgress;
pub use sync::SyncReport;
pub(crate) use tier::RemoteTier;

/// Where and how sealed segments go to object storage. Defaults in `RemoteConfig::new`.
#[derive(Clone)]
pub struct RemoteConfig {
    /// `s3://bucket/prefix`, `memory:///prefix`, `file:///path`. For S3, credentials, region
    /// and endpoint come from the usual `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`...), then `options`.
    pub url: String,
    /// Backend options by `object_store` name (`endpoint`, `region`, `allow_http`...).
    pub options: Vec<(String, String)>,
    /// A sealed segment's local copy is dropped once it is uploaded, verified, and its newest
    /// data is this old. Default 24 h (most replays are watched within a day of recording).
    pub local_retention: Duration,
    /// Multipart part size. Default 16 MiB (S3 needs at least 5 MiB for all parts but the last).
    pub part_bytes: usize,
    /// Block ranges of one object closer than this are fetched in one GET. Default 256 KiB:
    /// on S3 a GET costs ~20-50 ms of latency, 256 KiB of transfer ~2-5 ms.
    pub coalesce_gap: u64,
    /// Bound on the whole footers of remote segments kept on local disk (least recently used
    /// go first; each segment's fixed part and bloom filter, ~1.25 bytes per session, always
    /// stay). Default 512 MiB: with footers at ~1-2% of segment bytes, every lookup in the
    /// newest 25-50 GB of the bucket finds its footer locally.
    pub footer_cache_bytes: u64,
    /// Verify an upload by reading the object back and comparing CRC-32 (else size only).
    /// Default true.
    pub verify_read_back: bool,
    /// S3: retries of a failed request (with exponential backoff), and the time after which a
    /// request is not retried any more. Defaults 10 and 3 min (`object_store`'s); lower them
    /// where a read should fail fast rather than wait for an unreachable bucket.
    pub max_retries: usize,
    pub retry_timeout: Duration,
    /// A shared in-memory bucket (tests, benchmarks): set by `RemoteConfig::in_memory`.
    pub(crate) shared_memory: Option<Arc<object_store::memory::InMemory>>,
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("url", &self.url)
            .field(
                "options",
                &self.options.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("local_retention", &self.local_retention)
            .field("part_bytes", &self.part_bytes)
            .field("coalesce_gap", &self.coalesce_gap)
            .field("verify_read_back", &self.verify_read_back)
            .field("footer_cache_bytes", &self.footer_cache_bytes)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout", &self.retry_timeout)
            .finish()
    }
}

impl RemoteConfig {
    pub fn new(url: impl Into<String>) -> Self {
        RemoteConfig {
            url: url.into(),
            options: Vec::new(),
            local_retention: Duration::from_secs(24 * 3600),
            part_bytes: 16 << 20,
            coalesce_gap: 256 << 10,
            verify_read_back: true,
            footer_cache_bytes: 512 << 20,
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
            shared_memory: None,
        }
    }

    /// A bucket in memory that several stores (or one store reopened) share.
    pub fn in_memory(bucket: Arc<object_store::memory::InMemory>, prefix: &str) -> Self {
        let mut c = RemoteConfig::new(format!("memory:///{prefix}"));
        c.shared_memory = Some(bucket);
        c
    }

    pub fn with_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    pub fn with_local_retention(mut self, d: Duration) -> Self {
        self.local_retention = d;
        self
    }

    pub fn with_part_bytes(mut self, n: usize) -> Self {
        self.part_bytes = n;
        self
    }

    pub fn with_coalesce_gap(mut self, n: u64) -> Self {
        self.coalesce_gap = n;
        self
    }

    pub fn with_retries(mut self, max_retries: usize, retry_timeout: Duration) -> Self {
        self.max_retries = max_retries;
        self.retry_timeout = retry_timeout;
        self
    }

    pub fn with_footer_cache_bytes(mut self, n: u64) -> Self {
        self.footer_cache_bytes = n;
        self
    }

    pub fn with_verify_read_back(mut self, on: bool) -> Self {
        self.verify_read_back = on;
        self
    }
}
