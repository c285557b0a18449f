//! The object-store client of the remote tier: a thin, blocking face over Apache Arrow's
//! `object_store` crate (S3, GCS, Azure, local files, in memory). It owns a small tokio runtime
//! so that the engine's synchronous code (maintenance thread, readers) can call it from any
//! thread, inside or outside another runtime, and it counts every request it makes.

use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use serde::Serialize;

use super::manifest::UploadProgress;
use super::RemoteConfig;
use crate::error::{Error, IoContext, Result};
use crate::failpoint::crash_point;
use crate::storage::FileHandle;

/// Requests made to the object store since open (`Store::remote_stats`).
#[derive(Debug, Default)]
pub(crate) struct TierCounters {
    pub gets: AtomicU64,
    pub get_bytes: AtomicU64,
    pub puts: AtomicU64,
    pub put_bytes: AtomicU64,
    pub parts_uploaded: AtomicU64,
    pub uploads_resumed: AtomicU64,
    pub deletes: AtomicU64,
    pub lists: AtomicU64,
    pub footer_fetches: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TierStats {
    pub gets: u64,
    pub get_bytes: u64,
    pub puts: u64,
    pub put_bytes: u64,
    pub parts_uploaded: u64,
    pub uploads_resumed: u64,
    pub deletes: u64,
    pub lists: u64,
    /// Footers fetched from the bucket (cache misses, or a store opened elsewhere).
    pub footer_fetches: u64,
}

pub(crate) struct Client {
    store: Arc<dyn ObjectStore>,
    /// Set for backends whose multipart uploads can be resumed by id (S3, GCS, Azure, memory).
    multipart: Option<Arc<dyn MultipartStore>>,
    pub prefix: ObjPath,
    pub url: String,
    /// `scheme://bucket`, to name remote segments in messages.
    root: String,
    pub config: RemoteConfig,
    rt: Option<tokio::runtime::Runtime>,
    pub counters: TierCounters,
}

fn remote_err(context: impl Into<String>) -> impl FnOnce(object_store::Error) -> Error {
    let context = context.into();
    move |source| Error::Remote {
        context,
        source: Box::new(source),
    }
}

impl Client {
    pub fn open(config: RemoteConfig) -> Result<Client> {
        let (store, multipart, prefix) = super::backend::build(&config)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("replaystore-remote")
            .enable_all()
            .build()
            .ctx(|| "start the remote tier's runtime".to_string())?;
        let root = url::Url::parse(&config.url)
            .map(|u| format!("{}://{}", u.scheme(), u.host_str().unwrap_or("")))
            .unwrap_or_default();
        Ok(Client {
            store,
            multipart,
            prefix,
            root,
            url: config.url.clone(),
            config,
            rt: Some(rt),
            counters: TierCounters::default(),
        })
    }

    /// Runs `fut` on the tier's runtime and waits for it. Works from any thread, including a
    /// worker of another tokio runtime (where `block_on` would panic).
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Result<T> {
        let rt = self.rt.as_ref().ok_or(Error::Closed)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| Error::Closed)
    }

    pub fn url_root(&self) -> &str {
        &self.root
    }

    /// The object key of a segment: `<prefix>/segments/<days>d/<id, 20 digits>.seg`.
    pub fn segment_key(&self, lane_days: u16, id: u64) -> ObjPath {
        self.prefix
            .clone()
            .join("segments")
            .join(format!("{lane_days}d"))
            .join(format!("{id:020}.seg"))
    }

    /// The key of a store-wide file kept beside the segments (tombstone log, its key).
    pub fn meta_key(&self, name: &str) -> ObjPath {
        self.prefix.clone().join("meta").join(name)
    }

    pub fn stats(&self) -> TierStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TierStats {
            gets: l(&c.gets),
            get_bytes: l(&c.get_bytes),
            puts: l(&c.puts),
            put_bytes: l(&c.put_bytes),
            parts_uploaded: l(&c.parts_uploaded),
            uploads_resumed: l(&c.uploads_resumed),
            deletes: l(&c.deletes),
            lists: l(&c.lists),
            footer_fetches: l(&c.footer_fetches),
        }
    }

    pub fn count_footer_fetch(&self) {
        self.counters.footer_fetches.fetch_add(1, Ordering::Relaxed);
    }

    fn count_get(&self, bytes: usize) {
        self.counters.gets.fetch_add(1, Ordering::Relaxed);
        self.counters
            .get_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Uploads `data` (a sealed segment's mapped bytes, `size` of them) to `key`. Small files (and backends without
    /// resumable multipart) take one PUT; larger ones go in `part_bytes` parts, and `record` is
    /// called after the upload is created and after every part, with what a restarted process
    /// needs to resume (`progress` is where a previous process stopped). Idempotent: the key is
    /// derived from the segment id and a segment never changes once sealed.
    pub fn upload(
        &self,
        data: &[u8],
        key: &ObjPath,
        size: u64,
        progress: UploadProgress,
        record: &mut dyn FnMut(&UploadProgress) -> Result<()>,
    ) -> Result<()> {
        let part = self.config.part_bytes as u64;
        let multipart = match &self.multipart {
            Some(m) if size > part => m.clone(),
            _ => {
                let bytes = read_range(data, key, 0..size)?;
                let (store, k) = (self.store.clone(), key.clone());
                self.run(async move { store.put(&k, PutPayload::from(bytes)).await })?
                    .map_err(remote_err(format!("upload {key}")))?;
                self.counters.puts.fetch_add(1, Ordering::Relaxed);
                self.counters.put_bytes.fetch_add(size, Ordering::Relaxed);
                return Ok(());
            }
        };
        let mut progress = progress;
        let resumed = progress.upload_id.is_some();
        match self.upload_parts(&multipart, data, key, size, &mut progress, record) {
            Ok(()) => {
                if resumed {
                    self.counters
                        .uploads_resumed
                        .fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            // A stale upload id (the bucket's lifecycle rule aborted it, or it was completed by
            // the previous process just before it died): start over once.
            Err(e) if resumed => {
                log::warn!("resuming the upload of {key} failed ({e}); starting over");
                let id = progress.upload_id.take();
                if let Some(id) = id {
                    let (m, k) = (multipart.clone(), key.clone());
                    let _ = self.run(async move { m.abort_multipart(&k, &id).await });
                }
                progress.parts.clear();
                self.upload_parts(&multipart, data, key, size, &mut progress, record)
            }
            Err(e) => Err(e),
        }
    }

    fn upload_parts(
        &self,
        multipart: &Arc<dyn MultipartStore>,
        data: &[u8],
        key: &ObjPath,
        size: u64,
        progress: &mut UploadProgress,
        record: &mut dyn FnMut(&UploadProgress) -> Result<()>,
    ) -> Result<()> {
        let part = self.config.part_bytes as u64;
        let id = match &progress.upload_id {
            Some(id) => id.clone(),
            None => {
                let (m, k) = (multipart.clone(), key.clone());
                let id = self
                    .run(async move { m.create_multipart(&k).await })?
                    .map_err(remote_err(format!("start multipart upload of {key}")))?;
                progress.upload_id = Some(id.clone());
                progress.parts.clear();
                record(progress)?;
                id
            }
        };
        let count = size.div_ceil(part);
        for i in progress.parts.len() as u64..count {
            let range = i * part..((i + 1) * part).min(size);
            let len = range.end - range.start;
            let bytes = read_range(data, key, range)?;
            let (m, k, uid) = (multipart.clone(), key.clone(), id.clone());
            let done = self
                .run(async move {
                    m.put_part(&k, &uid, i as usize, PutPayload::from(bytes))
                        .await
                })?
                .map_err(remote_err(format!("upload part {i} of {key}")))?;
            self.counters.parts_uploaded.fetch_add(1, Ordering::Relaxed);
            self.counters.put_bytes.fetch_add(len, Ordering::Relaxed);
            progress.parts.push(done.content_id);
            record(progress)?;
            crash_point("upload:after_part");
        }
        let parts: Vec<PartId> = progress
            .parts
            .iter()
            .map(|c| PartId {
                content_id: c.clone(),
            })
            .collect();
        let (m, k) = (multipart.clone(), key.clone());
        self.run(async move { m.complete_multipart(&k, &id, parts).await })?
            .map_err(remote_err(format!("complete multipart upload of {key}")))?;
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Checks that the object at `key` is `size` bytes and, when `read_back` is set, that its
    /// bytes have the CRC-32 `crc` (one streamed GET of the whole object: free within a region
    /// on S3, and the only check that works on every backend; ETags are not content hashes
    /// for multipart uploads or KMS-encrypted buckets).
    pub fn verify(
        &self,
        key: &ObjPath,
        size: u64,
        crc: u32,
    ) -> Result<std::result::Result<(), String>> {
        let (store, k) = (self.store.clone(), key.clone());
        let read_back = self.config.verify_read_back;
        let got = self.run(async move {
            let meta = store.head(&k).await?;
            if !read_back || meta.size != size {
                return Ok((meta.size, None, 0));
            }
            let mut stream = store.get(&k).await?.into_stream();
            let mut h = crc32fast::Hasher::new();
            let mut n = 0u64;
            while let Some(b) = stream.try_next().await? {
                n += b.len() as u64;
                h.update(&b);
            }
            Ok::<_, object_store::Error>((meta.size, Some(h.finalize()), n))
        })?;
        let (remote_size, remote_crc, fetched) =
            got.map_err(remote_err(format!("verify {key}")))?;
        if fetched > 0 {
            self.count_get(fetched as usize);
        }
        if remote_size != size {
            return Ok(Err(format!("size {remote_size}, expected {size}")));
        }
        match remote_crc {
            Some(c) if c != crc => Ok(Err(format!("crc {c:08x}, expected {crc:08x}"))),
            _ => Ok(Ok(())),
        }
    }

    /// The last `n` bytes of an object (fewer if it is shorter) and the object's size.
    pub fn get_tail(&self, key: &ObjPath, n: u64) -> Result<(Bytes, u64)> {
        let (store, k) = (self.store.clone(), key.clone());
        let got = self.run(async move {
            let opts = GetOptions {
                range: Some(GetRange::Suffix(n)),
                ..Default::default()
            };
            let r = store.get_opts(&k, opts).await?;
            let size = r.meta.size;
            Ok::<_, object_store::Error>((r.bytes().await?, size))
        })?;
        let (bytes, size) = got.map_err(remote_err(format!("read the tail of {key}")))?;
        self.count_get(bytes.len());
        Ok((bytes, size))
    }

    /// Reads `wanted` byte ranges of one object (see `read_ranges_many`).
    pub fn read_ranges(&self, key: &ObjPath, wanted: &[Range<u64>]) -> Result<(Vec<Bytes>, u64)> {
        let mut got = self.read_ranges_many(&[(key.clone(), wanted.to_vec())])?;
        got.pop().ok_or_else(|| Error::Remote {
            context: format!("read {key}"),
            source: "no answer".into(),
        })
    }

    /// Reads byte ranges of several objects. Per object, ranges closer than `coalesce_gap` are
    /// merged into one GET; all the GETs of all the objects run concurrently, so a session
    /// spread over several remote segments costs one round trip, not one per segment. Returns,
    /// per object, the bytes of each wanted range in the order given and the GETs made.
    pub fn read_ranges_many(
        &self,
        reqs: &[(ObjPath, Vec<Range<u64>>)],
    ) -> Result<Vec<(Vec<Bytes>, u64)>> {
        let merged: Vec<Vec<Range<u64>>> = reqs
            .iter()
            .map(|(_, wanted)| coalesce(wanted, self.config.coalesce_gap))
            .collect();
        let jobs: Vec<(ObjPath, Range<u64>)> = reqs
            .iter()
            .zip(&merged)
            .flat_map(|((k, _), m)| m.iter().map(move |r| (k.clone(), r.clone())))
            .collect();
        let store = self.store.clone();
        let got = self.run(async move {
            let gets = jobs.iter().map(|(k, r)| {
                let (store, k, r) = (store.clone(), k.clone(), r.clone());
                async move {
                    let b = store.get_range(&k, r).await;
                    b.map_err(remote_err(format!("read {k}")))
                }
            });
            futures::future::try_join_all(gets).await
        })??;
        for b in &got {
            self.count_get(b.len());
        }
        let mut got = got.into_iter();
        let mut out = Vec::with_capacity(reqs.len());
        for ((key, wanted), merged) in reqs.iter().zip(&merged) {
            let fetched: Vec<Bytes> = got.by_ref().take(merged.len()).collect();
            let mut ranges = Vec::with_capacity(wanted.len());
            for w in wanted {
                let i = merged.partition_point(|m| m.end < w.end);
                match (merged.get(i), fetched.get(i)) {
                    (Some(m), Some(b))
                        if m.start <= w.start && b.len() as u64 >= w.end - m.start =>
                    {
                        ranges.push(
                            b.slice((w.start - m.start) as usize..(w.end - m.start) as usize),
                        );
                    }
                    _ => {
                        return Err(Error::Remote {
                            context: format!("read {key}"),
                            source: "object shorter than the ranges its footer lists".into(),
                        })
                    }
                }
            }
            out.push((ranges, merged.len() as u64));
        }
        Ok(out)
    }

    /// One byte range of an object, one GET.
    pub fn get_range(&self, key: &ObjPath, range: Range<u64>) -> Result<Bytes> {
        let (mut got, _) = self.read_ranges(key, std::slice::from_ref(&range))?;
        got.pop().ok_or_else(|| Error::Remote {
            context: format!("read {key}"),
            source: "no bytes returned".into(),
        })
    }

    /// Downloads a whole object into `dest` (a new, empty local file), appending as it comes.
    pub fn download(&self, key: &ObjPath, dest: FileHandle) -> Result<u64> {
        let (store, k) = (self.store.clone(), key.clone());
        let got = self.run(async move {
            let mut stream = store.get(&k).await?.into_stream();
            let mut n = 0u64;
            while let Some(b) = stream.try_next().await? {
                n += b.len() as u64;
                dest.append(&b).map_err(|e| object_store::Error::Generic {
                    store: "local",
                    source: Box::new(e),
                })?;
            }
            Ok::<_, object_store::Error>(n)
        })?;
        let n = got.map_err(remote_err(format!("download {key}")))?;
        self.count_get(n as usize);
        Ok(n)
    }

    /// Deletes an object; one already gone is not an error (deletes are retried after a crash).
    pub fn delete(&self, key: &ObjPath) -> Result<()> {
        let (store, k) = (self.store.clone(), key.clone());
        let r = self.run(async move { store.delete(&k).await })?;
        self.counters.deletes.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(remote_err(format!("delete {key}"))(e)),
        }
    }

    /// Every object under `<prefix>/<sub>` (all of the prefix when `sub` is empty).
    pub fn list(&self, sub: &str) -> Result<Vec<object_store::ObjectMeta>> {
        let store = self.store.clone();
        let p = sub
            .split('/')
            .filter(|s| !s.is_empty())
            .fold(self.prefix.clone(), |p, part| p.join(part));
        let shown = p.clone();
        self.counters.lists.fetch_add(1, Ordering::Relaxed);
        self.run(async move { store.list(Some(&p)).try_collect::<Vec<_>>().await })?
            .map_err(remote_err(format!("list {shown}")))
    }

    /// One small object, whole (`None` when absent).
    pub fn get_small(&self, key: &ObjPath, max: u64) -> Result<Option<Bytes>> {
        let (store, k) = (self.store.clone(), key.clone());
        let got = self.run(async move {
            let r = store.get(&k).await?;
            if r.meta.size > max {
                return Ok(Err(r.meta.size));
            }
            Ok(Ok(r.bytes().await?))
        })?;
        match got {
            Ok(Ok(b)) => {
                self.count_get(b.len());
                Ok(Some(b))
            }
            Ok(Err(size)) => Err(Error::Remote {
                context: format!("read {key}"),
                source: format!("{size} bytes, more than the {max} expected").into(),
            }),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote_err(format!("read {key}"))(e)),
        }
    }

    /// Puts one small object whole.
    pub fn put_small(&self, key: &ObjPath, bytes: Vec<u8>) -> Result<()> {
        let (store, k) = (self.store.clone(), key.clone());
        let n = bytes.len() as u64;
        self.run(async move { store.put(&k, PutPayload::from(bytes)).await })?
            .map_err(remote_err(format!("upload {key}")))?;
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        self.counters.put_bytes.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // `shutdown_background` never blocks, so dropping a store inside another runtime is safe.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// One part of the bytes to upload.
fn read_range(data: &[u8], key: &ObjPath, r: Range<u64>) -> Result<Vec<u8>> {
    usize::try_from(r.start)
        .ok()
        .zip(usize::try_from(r.end).ok())
        .and_then(|(a, b)| data.get(a..b))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| Error::Remote {
            context: format!("upload {key}"),
            source: format!("range {r:?} outside the {} bytes to upload", data.len()).into(),
        })
}

/// Sorts ranges and merges those whose gap is at most `gap` bytes.
pub(crate) fn coalesce(ranges: &[Range<u64>], gap: u64) -> Vec<Range<u64>> {
    let mut sorted: Vec<Range<u64>> = ranges.to_vec();
    sorted.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in sorted {
        match out.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(gap) => {
                last.end = last.end.max(r.end);
            }
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::coalesce;

    #[test]
    fn coalesces_neighbours_within_the_gap() {
        let got = coalesce(&[100..200, 0..50, 230..300, 1000..1100], 40);
        assert_eq!(got, vec![0..50, 100..300, 1000..1100]);
        assert_eq!(coalesce(&[0..10, 10..20], 0), vec![0..20]);
        assert_eq!(coalesce(&[0..10, 11..20], 0), vec![0..10, 11..20]);
    }
}
