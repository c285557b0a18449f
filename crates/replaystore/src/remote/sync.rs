//! One pass of the remote tier (`RemoteTier::sync`): upload sealed segments and verify them,
//! delete superseded objects, drop local copies past `local_retention`, upload the meta files.
//!
//! Invariant: the bucket always holds every verified segment or the segment that replaces it.
//! A replaced or expired object is first marked `Doomed` in the manifest (durable), and deleted
//! only once its replacement is verified; a crash anywhere leaves a state the next sync finishes.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use super::manifest::{Entry, Manifest, State, UploadProgress};
use super::objects::Objects;
use crate::error::{Error, IoContext, Result};
use crate::failpoint::crash_point;
use crate::fs::Fs;
use crate::segment::Segment;
use crate::segment_set::{Edit, SegmentSet, Version};

/// Files of the store directory kept in the bucket too (`<prefix>/meta/`), so that a store can
/// be opened elsewhere: the tombstone log (deletions must survive the move) and its key.
const META_FILES: [&str; 2] = ["tombstones.log", "KEY"];

/// What one `remote_sync` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    pub uploaded: u64,
    pub bytes_uploaded: u64,
    pub uploads_resumed: u64,
    pub verify_failures: u64,
    pub local_copies_dropped: u64,
    pub local_bytes_dropped: u64,
    pub objects_deleted: u64,
    pub meta_files_uploaded: u64,
    /// Steps that failed (they are retried at the next sync).
    pub errors: Vec<String>,
}

/// The CRC-32 of each meta file as last uploaded, so that a pass uploads only what changed.
/// Held by the tier's pass lock.
#[derive(Default)]
pub(super) struct MetaUploads {
    crc: [u32; META_FILES.len()],
}

impl MetaUploads {
    /// Uploads the meta files of `dir` whose content changed since the last upload.
    pub fn upload(&mut self, objects: &Objects, fs: &Fs, dir: &Path) -> Result<u64> {
        let mut n = 0;
        for (last, name) in self.crc.iter_mut().zip(META_FILES) {
            let Ok(bytes) = fs.read(&dir.join(name)) else {
                continue;
            };
            let crc = crc32fast::hash(&bytes);
            if *last == crc && crc != 0 {
                continue;
            }
            let client = &objects.client;
            client.put_small(&client.meta_key(name), bytes)?;
            *last = crc;
            n += 1;
        }
        Ok(n)
    }
}

/// What one pass works on: the tier's parts, borrowed under its pass lock, and the segment
/// set. The caller also holds the maintenance lock: nothing else removes or replaces sealed
/// segments meanwhile.
pub(super) struct SyncPass<'a> {
    pub dir: &'a Path,
    pub fs: &'a Fs,
    pub objects: &'a Arc<Objects>,
    pub manifest: &'a Mutex<Manifest>,
    pub meta: &'a mut MetaUploads,
    pub segments: &'a SegmentSet,
}

impl SyncPass<'_> {
    /// One pass of the remote tier at `now` (store clock): upload and verify sealed local
    /// segments, delete doomed objects whose replacement is now verified, drop local copies
    /// past `local_retention`, upload changed meta files. A failing step is logged and
    /// reported; the rest go on.
    pub fn run(self, now: i64) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let segments = self.segments;
        let v = segments.current();
        let segs: Vec<Arc<Segment>> = v.inactive().cloned().collect();
        for seg in &segs {
            let local_sealed = seg.is_sealed() && !seg.is_remote();
            if local_sealed && !self.manifest.lock().is_verified(seg.id) {
                if let Err(e) = self.upload_segment(seg, &mut report) {
                    log::error!("remote: upload of segment {} failed: {e}", seg.id);
                    report.errors.push(format!("upload {}: {e}", seg.id));
                }
            }
        }
        match delete_doomed(self.objects, self.manifest, &segments.current()) {
            Ok(n) => report.objects_deleted += n,
            Err(e) => report.errors.push(format!("delete: {e}")),
        }
        let keep_ms = self.objects.client.config.local_retention.as_millis() as i64;
        for seg in &segs {
            let due =
                !seg.is_remote() && seg.totals().max_arrival_ms <= now.saturating_sub(keep_ms);
            if due && self.manifest.lock().is_verified(seg.id) {
                if let Err(e) = self.drop_local_copy(seg, &mut report) {
                    log::error!("remote: dropping the local copy of {} failed: {e}", seg.id);
                    report.errors.push(format!("drop {}: {e}", seg.id));
                }
            }
        }
        match self.meta.upload(self.objects, self.fs, self.dir) {
            Ok(n) => report.meta_files_uploaded = n,
            Err(e) => report.errors.push(format!("meta: {e}")),
        }
        Ok(report)
    }

    /// Uploads one sealed local segment (resuming a multipart upload the manifest records),
    /// verifies it and records it verified.
    fn upload_segment(&self, seg: &Segment, report: &mut SyncReport) -> Result<()> {
        let client = &self.objects.client;
        let bytes = seg.mapped_bytes().ok_or_else(|| Error::Remote {
            context: format!("upload segment {}", seg.id),
            source: "segment is not mapped".into(),
        })?;
        let (size, crc) = (bytes.len() as u64, crc32fast::hash(bytes));
        let key = client.segment_key(seg.lane_days, seg.id);
        let progress = match self.manifest.lock().state(seg.id) {
            Some(State::Uploading(p)) => p.clone(),
            _ => UploadProgress::default(),
        };
        let resumed = progress.upload_id.is_some();
        let entry = |state| Entry {
            id: seg.id,
            lane_days: seg.lane_days,
            size,
            crc32: crc,
            state,
        };
        self.manifest
            .lock()
            .set(entry(State::Uploading(progress.clone())))?;
        let mut record =
            |p: &UploadProgress| self.manifest.lock().set(entry(State::Uploading(p.clone())));
        client.upload(bytes, &key, size, progress, &mut record)?;
        crash_point("upload:before_verify");
        match client.verify(&key, size, crc)? {
            Ok(()) => {
                self.manifest.lock().set(entry(State::Verified))?;
                report.uploaded += 1;
                report.bytes_uploaded += size;
                report.uploads_resumed += resumed as u64;
                log::info!(
                    "remote: segment {} uploaded to {key} ({size} bytes)",
                    seg.id
                );
                Ok(())
            }
            Err(why) => {
                // Start over next time.
                self.manifest
                    .lock()
                    .set(entry(State::Uploading(UploadProgress::default())))?;
                report.verify_failures += 1;
                Err(Error::Remote {
                    context: format!("verify {key}"),
                    source: why.into(),
                })
            }
        }
    }

    /// Replaces a verified local segment by its remote twin for readers, then unlinks the
    /// local file. The footer cache is written first, from the local bytes.
    fn drop_local_copy(&self, seg: &Arc<Segment>, report: &mut SyncReport) -> Result<()> {
        let Some(twin) = self.objects.twin(seg)? else {
            return Ok(());
        };
        let size = twin.size();
        // Under the maintenance lock nothing removed it since `sync` looked; the check is
        // cheap and keeps a caller without the lock from failing the edit's assertion.
        if !self.segments.current().contains(seg.id) {
            return Ok(());
        }
        self.segments.apply(Edit::default().replace(Arc::new(twin)));
        crash_point("sync:before_unlink");
        self.fs
            .remove(&seg.path)
            .ctx(|| format!("remove {}", seg.path.display()))?;
        if let Some(d) = seg.path.parent() {
            self.fs.sync_dir_ctx(d)?;
        }
        report.local_copies_dropped += 1;
        report.local_bytes_dropped += size;
        Ok(())
    }
}

/// Deletes the objects of doomed entries whose replacement (if any) is verified or gone from
/// `live`; returns how many. The caller holds the tier's pass lock.
pub(super) fn delete_doomed(
    objects: &Objects,
    manifest: &Mutex<Manifest>,
    live: &Version,
) -> Result<u64> {
    let due: Vec<Entry> = {
        let m = manifest.lock();
        m.entries
            .values()
            .filter(|e| match e.state {
                State::Doomed { after: None } => true,
                // Verified, or gone from the store altogether (nothing left to wait for).
                State::Doomed { after: Some(r) } => m.is_verified(r) || !live.contains(r),
                _ => false,
            })
            .cloned()
            .collect()
    };
    let mut deleted = 0;
    for e in due {
        let client = &objects.client;
        client.delete(&client.segment_key(e.lane_days, e.id))?;
        crash_point("sync:after_delete");
        objects.cache.forget(e.id);
        let mut m = manifest.lock();
        m.entries.remove(&e.id);
        m.save()?;
        deleted += 1;
    }
    Ok(deleted)
}
