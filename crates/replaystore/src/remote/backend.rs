//! Builds the `object_store` backend a `RemoteConfig` names.

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjPath;
use object_store::ObjectStore;

use super::RemoteConfig;
use crate::error::{Error, Result};

type Built = (
    Arc<dyn ObjectStore>,
    Option<Arc<dyn MultipartStore>>,
    ObjPath,
);

fn bad(reason: impl std::fmt::Display) -> Error {
    Error::InvalidConfig {
        field: "remote.url",
        reason: reason.to_string(),
    }
}

/// `s3://bucket/prefix` (credentials, region and endpoint from the `AWS_*` environment variables,
/// overridden by `options`), `memory:///prefix` (or a shared `InMemory` given to
/// `RemoteConfig::in_memory`), and whatever else `object_store::parse_url_opts` knows
/// (`file:///path`); only S3 and memory resume multipart uploads part by part.
pub(super) fn build(config: &RemoteConfig) -> Result<Built> {
    let url = url::Url::parse(&config.url).map_err(bad)?;
    let prefix = ObjPath::parse(url.path().trim_matches('/')).map_err(bad)?;
    if let Some(mem) = &config.shared_memory {
        return Ok((mem.clone(), Some(mem.clone()), prefix));
    }
    match url.scheme() {
        #[cfg(feature = "remote")]
        "s3" | "s3a" => {
            let retry = object_store::RetryConfig {
                max_retries: config.max_retries,
                retry_timeout: config.retry_timeout,
                ..Default::default()
            };
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_url(config.url.as_str())
                .with_retry(retry);
            for (k, v) in &config.options {
                let key = k.parse().map_err(|e| bad(format!("option {k}: {e}")))?;
                b = b.with_config(key, v.clone());
            }
            let s3 = Arc::new(b.build().map_err(bad)?);
            Ok((s3.clone(), Some(s3), prefix))
        }
        #[cfg(not(feature = "remote"))]
        "s3" | "s3a" => Err(bad(
            "this build has no S3 client: enable the `remote` feature of the replaystore crate",
        )),
        "memory" => {
            let m = Arc::new(InMemory::new());
            Ok((m.clone(), Some(m), prefix))
        }
        _ => {
            let (store, path) =
                object_store::parse_url_opts(&url, config.options.clone()).map_err(bad)?;
            Ok((Arc::from(store), None, path))
        }
    }
}
