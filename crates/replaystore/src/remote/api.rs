//! The remote tier's public reports: `RemoteStatus`, and the bucket listing for audits.

use super::client::TierStats;
use crate::error::Result;

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
    let tier = super::client::Client::open(config.clone())?;
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

/// Small objects of one's own beside the stores of a bucket: what an embedder keeps there that
/// is not a store (the Kafka consumer's deletion receipts). Keys are relative to the config's
/// prefix; stores under the same prefix never look outside their own.
pub struct Bucket {
    client: super::client::Client,
}

/// The most a `Bucket` object may hold (a receipt is a few hundred bytes).
pub const MAX_SMALL_OBJECT_BYTES: u64 = 1 << 20;

impl Bucket {
    pub fn open(config: &super::RemoteConfig) -> Result<Bucket> {
        Ok(Bucket {
            client: super::client::Client::open(config.clone())?,
        })
    }

    fn key(&self, key: &str) -> object_store::path::Path {
        let mut p = self.client.prefix.clone();
        for part in key.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }

    /// Writes `key` whole (replacing it).
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.client.put_small(&self.key(key), bytes)
    }

    /// Every object under `under`, with its bytes (each at most `MAX_SMALL_OBJECT_BYTES`).
    /// Keys are relative to the prefix.
    pub fn read_all(&self, under: &str) -> Result<Vec<BucketObject>> {
        let root = self.client.prefix.to_string();
        let mut out = Vec::new();
        for o in self.client.list(under)? {
            let bytes = self.client.get_small(&o.location, MAX_SMALL_OBJECT_BYTES)?;
            let full = o.location.to_string();
            let key = full
                .strip_prefix(&root)
                .unwrap_or(&full)
                .trim_start_matches('/')
                .to_string();
            out.push(BucketObject {
                key,
                size: o.size,
                bytes: bytes.map(|b| b.to_vec()),
            });
        }
        Ok(out)
    }
}
