//! The remote tier at run time: the state a store keeps (`Remote`), the maintenance step that
//! uploads sealed segments, verifies them, drops expired local copies and deletes superseded
//! objects (`Remote::sync`, run under the maintenance lock), and open-time reconciliation (`Remote::open`, `reconcile`),
//! including opening a store on a fresh directory from the bucket alone (`adopt_bucket`).
//!
//! Invariant: the bucket always holds every verified segment or the segment that replaces it.
//! A replaced or expired object is first marked `Doomed` in the manifest (durable), and deleted
//! only once its replacement is verified; a crash anywhere leaves a state the next sync finishes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use super::footer_cache::FooterCache;
use super::manifest::UploadProgress;
use super::manifest::{Entry, Manifest, State};
use super::tier::Tier;
use super::RemoteConfig;
use crate::error::{Error, IoContext, Result};
use crate::failpoint::crash_point;
use crate::format::{FooterView, SegmentHeader, Trailer, SEGMENT_HEADER_LEN, TRAILER_LEN};
use crate::fs::Fs;
use crate::segment::{encode_meta, Segment};
use crate::segment_set::{Edit, SegmentSet, Version};

/// Files of the store directory kept in the bucket too (`<prefix>/meta/`), so that a store can
/// be opened elsewhere: the tombstone log (deletions must survive the move) and its key.
const META_FILES: [&str; 2] = ["tombstones.log", "KEY"];
/// A meta file larger than this is not downloaded.
const MAX_META_BYTES: u64 = 1 << 30;
/// First read of a footer: the object's last 64 KiB, enough for most footers in one GET.
const TAIL_GUESS: u64 = 64 << 10;

pub(crate) struct Remote {
    dir: PathBuf,
    fs: Fs,
    pub tier: Arc<Tier>,
    pub manifest: Mutex<Manifest>,
    /// Footer caches in `<dir>/remote/footers/`, bounded by `footer_cache_bytes`.
    pub cache: Arc<FooterCache>,
    /// Scratch space for whole-object downloads (compaction of a remote segment).
    pub scratch: PathBuf,
    /// CRC-32 of each meta file as last uploaded.
    meta_uploaded: Mutex<Vec<u32>>,
}

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

impl Remote {
    /// Opens the remote state of the store in `dir`. With no manifest yet and no local
    /// segment (a store moved to this machine, or a new one), the bucket is listed and every
    /// segment in it adopted: the bucket must answer. A store that already has local segments
    /// and gets a tier for the first time starts with an empty manifest and needs the bucket
    /// only to upload, so it opens (and ingests) while the bucket is unreachable.
    pub fn open(dir: &Path, fs: &Fs, config: RemoteConfig, has_local: bool) -> Result<Remote> {
        let limit = config.footer_cache_bytes;
        let tier = Arc::new(Tier::open(config)?);
        let footers = dir.join("remote").join("footers");
        let cache = Arc::new(FooterCache::open(&footers, limit, fs)?);
        let scratch = dir.join("remote").join("tmp");
        fs.create_dir_all(&scratch)?;
        // Leftovers of downloads cut short by a crash.
        for p in fs.list(&scratch).unwrap_or_default() {
            fs.remove_quietly(&p);
        }
        let fresh = !fs.exists(&dir.join("REMOTE"));
        let manifest = Manifest::open(dir, fs)?;
        let remote = Remote {
            dir: dir.to_path_buf(),
            fs: fs.clone(),
            tier,
            manifest: Mutex::new(manifest),
            cache,
            scratch,
            meta_uploaded: Mutex::new(vec![0; META_FILES.len()]),
        };
        if fresh && !has_local {
            remote.adopt_bucket(dir, fs)?;
        } else if fresh {
            remote.manifest.lock().save()?;
        }
        Ok(remote)
    }

    /// Adopts the bucket on a directory with no manifest and no segment (a partition moved to
    /// this machine, docs/scale-out.md): records every segment object as verified, installs the
    /// bucket's `KEY` and `tombstones.log` (`install_meta`), and writes the manifest last. The
    /// manifest is the durable record that adoption is complete: a crash anywhere before it
    /// leaves a directory that the next open adopts again from the start, and every file it
    /// wrote is whole or absent (`Fs::replace_file`).
    fn adopt_bucket(&self, dir: &Path, fs: &Fs) -> Result<()> {
        let objects = self.tier.list("segments")?;
        let mut m = self.manifest.lock();
        for o in &objects {
            let Some((lane_days, id)) = parse_segment_key(o.location.as_ref()) else {
                log::warn!("remote: ignoring {}: not a segment name", o.location);
                continue;
            };
            m.entries.insert(
                id,
                Entry {
                    id,
                    lane_days,
                    size: o.size,
                    crc32: 0,
                    state: State::Verified,
                },
            );
        }
        self.install_meta(dir, fs)?;
        crash_point("adopt:before_manifest");
        if !objects.is_empty() {
            log::info!(
                "remote: adopted {} segments from {}",
                m.entries.len(),
                self.tier.url
            );
        }
        m.save()
    }

    /// The meta files of an adoption. The bucket's tombstone log (the one of the last sync) and
    /// its key replace whatever the directory holds: nothing (the usual case), or the files of
    /// an adoption cut short (whole, or torn or empty if an older version wrote them without
    /// fsync). One exception: a local log with a pending request the bucket's copy does not
    /// know (a deletion made in this directory while it was opened without the remote) is
    /// never overwritten; open fails and says so. A bucket without a tombstone log (a new
    /// prefix) leaves the directory's files as they are.
    fn install_meta(&self, dir: &Path, fs: &Fs) -> Result<()> {
        let fetch = |name: &str| {
            self.tier
                .get_small(&self.tier.meta_key(name), MAX_META_BYTES)
        };
        let Some(log) = fetch("tombstones.log")? else {
            return Ok(());
        };
        let key = fetch("KEY")?;
        let log_path = dir.join("tombstones.log");
        let local = match fs.read(&log_path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(format!("read {}", log_path.display()), e)),
        };
        if let Some(local) = &local {
            let (_, theirs) = crate::tombstone::log_requests(&log);
            let (mine, _) = crate::tombstone::log_requests(local);
            let missing: Vec<u64> = mine
                .iter()
                .filter(|r| !theirs.contains(r))
                .map(|r| r.0)
                .collect();
            if !missing.is_empty() {
                return Err(Error::InvalidConfig {
                    field: "remote",
                    reason: format!(
                        "adopting {}: {} holds pending deletion requests {missing:?} that the \
                         bucket's tombstone log does not; refusing to overwrite them (this \
                         directory was used without the remote, or belongs to another store)",
                        self.tier.url,
                        log_path.display()
                    ),
                });
            }
        }
        let key_path = dir.join("KEY");
        match key {
            Some(k) if k.len() == 32 => {
                if fs.read(&key_path).ok().as_deref() != Some(&k[..]) {
                    fs.replace_file(&key_path, &dir.join("KEY.tmp"), &[&k])?;
                }
            }
            Some(k) => {
                return Err(Error::Corrupt {
                    segment: 0,
                    path: PathBuf::from(self.tier.meta_key("KEY").to_string()),
                    offset: 0,
                    reason: format!("the key file must hold exactly 32 bytes, holds {}", k.len()),
                })
            }
            // The old owner died between uploading the log and its key: pending requests stay
            // in force (they name their target in clear); retired ones no longer refuse late
            // chunks.
            None => log::error!(
                "remote: {} has a tombstone log but no KEY: retired deletions will not refuse \
                 late chunks",
                self.tier.url
            ),
        }
        crash_point("adopt:after_key");
        if local.as_deref() != Some(&log[..]) {
            fs.replace_file(&log_path, &dir.join("tombstones.log.tmp"), &[&log])?;
        }
        Ok(())
    }

    /// Opens a segment that is only in the bucket: from its `.meta` cache file, fetched
    /// (with the whole footer) when missing or damaged.
    pub fn open_segment(&self, e: &Entry) -> Result<Segment> {
        let key = self.tier.segment_key(e.lane_days, e.id);
        let open = || {
            Segment::open_remote(
                self.tier.clone(),
                self.cache.clone(),
                key.clone(),
                e.size,
                &self.scratch,
            )
        };
        match open() {
            Ok(s) => Ok(s),
            Err(first) => {
                if self.cache.fs().exists(&self.cache.meta_path(e.id)) {
                    log::warn!(
                        "remote: footer cache of {} refused ({first}); fetching it",
                        e.id
                    );
                }
                self.fetch_footer(e.id, &key, e.size)?;
                open()
            }
        }
    }

    /// Two or three range GETs: the header, the last 64 KiB, the rest of a longer footer.
    /// Writes the `.meta` file and puts the whole footer in the cache.
    fn fetch_footer(&self, id: u64, key: &object_store::path::Path, size: u64) -> Result<()> {
        let bad = |why: String| Error::Corrupt {
            segment: id,
            path: PathBuf::from(key.to_string()),
            offset: 0,
            reason: why,
        };
        let min = (SEGMENT_HEADER_LEN + TRAILER_LEN) as u64;
        if size < min {
            return Err(bad(format!("object of {size} bytes is too short")));
        }
        self.tier.count_footer_fetch();
        let (tail, real) = self.tier.get_tail(key, TAIL_GUESS.min(size))?;
        if real != size {
            return Err(bad(format!("object is {real} bytes, expected {size}")));
        }
        let t = Trailer::decode(&tail[tail.len().saturating_sub(TRAILER_LEN)..], size)
            .map_err(|e| bad(e.0))?;
        let want = t.footer_len as u64 + TRAILER_LEN as u64;
        let footer = if want <= tail.len() as u64 {
            tail.slice(tail.len() - want as usize..)
        } else {
            self.tier.get_range(key, t.footer_offset..size)?
        };
        let header = self.tier.get_range(key, 0..SEGMENT_HEADER_LEN as u64)?;
        let h = SegmentHeader::decode(&header).map_err(|e| bad(e.0))?;
        let format = t.footer_format(h.created_ms);
        let view = FooterView::parse(&footer, 0, t.footer_len, t.footer_crc, format)
            .map_err(|e| bad(e.0))?;
        let trailer = &footer[footer.len() - TRAILER_LEN..];
        self.write_cache(id, &header, &footer, trailer, view.meta_len())
    }

    /// Writes both cache files of a remote segment: `.meta` (kept) and the whole footer
    /// (bounded, evictable). `footer_and_trailer` is the segment's bytes from its footer on.
    fn write_cache(
        &self,
        id: u64,
        header: &[u8],
        footer_and_trailer: &[u8],
        trailer: &[u8],
        meta_len: usize,
    ) -> Result<()> {
        let meta = encode_meta(header, trailer, &footer_and_trailer[..meta_len]);
        self.cache.put_meta(id, &meta)?;
        self.cache.put(id, &[header, footer_and_trailer])
    }

    /// Uploads the meta files whose content changed since the last upload.
    pub(crate) fn upload_meta(&self, dir: &Path) -> Result<u64> {
        let mut n = 0;
        let mut last = self.meta_uploaded.lock();
        for (i, name) in META_FILES.iter().enumerate() {
            let Ok(bytes) = self.cache.fs().read(&dir.join(name)) else {
                continue;
            };
            let crc = crc32fast::hash(&bytes);
            if last[i] == crc && crc != 0 {
                continue;
            }
            self.tier.put_small(&self.tier.meta_key(name), bytes)?;
            last[i] = crc;
            n += 1;
        }
        Ok(n)
    }
}

/// `.../segments/<days>d/<id>.seg` -> (days, id).
fn parse_segment_key(key: &str) -> Option<(u16, u64)> {
    let mut parts = key.rsplit('/');
    let file = parts.next()?;
    let lane = parts.next()?;
    let id = file.strip_suffix(".seg")?.parse().ok()?;
    let days = lane.strip_suffix('d')?.parse().ok()?;
    Some((days, id))
}

/// The run-time steps of the tier. The caller holds the maintenance lock: nothing else removes
/// or replaces sealed segments meanwhile.
impl Remote {
    /// One pass of the remote tier at `now` (store clock): upload and verify sealed local
    /// segments, delete doomed objects whose replacement is now verified, drop local copies
    /// past `local_retention`, upload changed meta files. A failing step is logged and
    /// reported; the rest go on.
    pub(crate) fn sync(&self, segments: &SegmentSet, now: i64) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let remote = self;
        let v = segments.current();
        let segs: Vec<Arc<Segment>> = v.inactive().cloned().collect();
        for seg in &segs {
            let local_sealed = seg.is_sealed() && !seg.is_remote();
            if local_sealed && !remote.manifest.lock().is_verified(seg.id) {
                if let Err(e) = self.upload_segment(seg, &mut report) {
                    log::error!("remote: upload of segment {} failed: {e}", seg.id);
                    report.errors.push(format!("upload {}: {e}", seg.id));
                }
            }
        }
        if let Err(e) = self.delete_doomed(&segments.current(), &mut report) {
            report.errors.push(format!("delete: {e}"));
        }
        let keep_ms = remote.tier.config.local_retention.as_millis() as i64;
        for seg in &segs {
            let due =
                !seg.is_remote() && seg.totals().max_arrival_ms <= now.saturating_sub(keep_ms);
            if due && remote.manifest.lock().is_verified(seg.id) {
                if let Err(e) = self.drop_local_copy(segments, seg, &mut report) {
                    log::error!("remote: dropping the local copy of {} failed: {e}", seg.id);
                    report.errors.push(format!("drop {}: {e}", seg.id));
                }
            }
        }
        match remote.upload_meta(&self.dir) {
            Ok(n) => report.meta_files_uploaded = n,
            Err(e) => report.errors.push(format!("meta: {e}")),
        }
        Ok(report)
    }

    /// Uploads one sealed local segment (resuming a multipart upload the manifest records),
    /// verifies it and records it verified.
    fn upload_segment(&self, seg: &Segment, report: &mut SyncReport) -> Result<()> {
        let remote = self;
        let bytes = seg.mapped_bytes().ok_or_else(|| Error::Remote {
            context: format!("upload segment {}", seg.id),
            source: "segment is not mapped".into(),
        })?;
        let (size, crc) = (bytes.len() as u64, crc32fast::hash(bytes));
        let key = remote.tier.segment_key(seg.lane_days, seg.id);
        let progress = match remote.manifest.lock().state(seg.id) {
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
        remote
            .manifest
            .lock()
            .set(entry(State::Uploading(progress.clone())))?;
        let mut record = |p: &UploadProgress| {
            remote
                .manifest
                .lock()
                .set(entry(State::Uploading(p.clone())))
        };
        remote
            .tier
            .upload(bytes, &key, size, progress, &mut record)?;
        crash_point("upload:before_verify");
        match remote.tier.verify(&key, size, crc)? {
            Ok(()) => {
                remote.manifest.lock().set(entry(State::Verified))?;
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
                remote
                    .manifest
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
    fn drop_local_copy(
        &self,
        segments: &SegmentSet,
        seg: &Arc<Segment>,
        report: &mut SyncReport,
    ) -> Result<()> {
        let remote = self;
        let (Some(bytes), Some(footer)) = (seg.mapped_bytes(), seg.footer()) else {
            return Ok(());
        };
        let from = footer.offset as usize;
        remote.write_cache(
            seg.id,
            &bytes[..SEGMENT_HEADER_LEN],
            &bytes[from..],
            &bytes[bytes.len() - TRAILER_LEN..],
            footer.meta_len(),
        )?;
        let key = remote.tier.segment_key(seg.lane_days, seg.id);
        let size = bytes.len() as u64;
        let twin = Arc::new(Segment::open_remote(
            remote.tier.clone(),
            remote.cache.clone(),
            key,
            size,
            &remote.scratch,
        )?);
        // Under the maintenance lock nothing removed it since `sync` looked; the check is
        // cheap and keeps a caller without the lock from failing the edit's assertion.
        if !segments.current().contains(seg.id) {
            return Ok(());
        }
        segments.apply(Edit::default().replace(twin));
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

    /// Deletes the objects of doomed entries whose replacement (if any) is verified.
    pub(crate) fn delete_doomed(&self, live: &Version, report: &mut SyncReport) -> Result<()> {
        let remote = self;
        let due: Vec<Entry> = {
            let m = remote.manifest.lock();
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
        for e in due {
            remote
                .tier
                .delete(&remote.tier.segment_key(e.lane_days, e.id))?;
            crash_point("sync:after_delete");
            remote.cache.forget(e.id);
            let mut m = remote.manifest.lock();
            m.entries.remove(&e.id);
            m.save()?;
            report.objects_deleted += 1;
        }
        Ok(())
    }

    /// Marks segments that left the store (expired, or replaced by `replaced_by`) for deletion
    /// from the bucket; segments never uploaded are only forgotten. Called before their local
    /// files go, so a crash cannot leave an object nobody will delete.
    pub(crate) fn doom(&self, ids: &[u64], replaced_by: Option<u64>) -> Result<()> {
        let remote = self;
        let mut m = remote.manifest.lock();
        let mut changed = false;
        // Objects waiting for one of `ids` to be verified now wait for its replacement (or,
        // when nothing replaces it, for nothing: its data is gone on purpose).
        for e in m.entries.values_mut() {
            if let State::Doomed { after: Some(a) } = e.state {
                if ids.contains(&a) {
                    e.state = State::Doomed { after: replaced_by };
                    changed = true;
                }
            }
        }
        for id in ids {
            let Some(e) = m.entries.get_mut(id) else {
                continue;
            };
            // Even an upload never verified may have left a whole object: delete its key too
            // (idempotent; stray multipart parts go with the bucket's
            // AbortIncompleteMultipartUpload rule).
            e.state = State::Doomed { after: replaced_by };
            changed = true;
        }
        if changed {
            m.save()?;
        }
        Ok(())
    }

    /// Whether any object still waits for deletion (a deletion request is not complete while
    /// a replaced object may hold its bytes).
    pub(crate) fn deletes_pending(&self) -> bool {
        self.manifest
            .lock()
            .entries
            .values()
            .any(|e| matches!(e.state, State::Doomed { .. }))
    }
}

/// Open-time reconciliation of the local segments with the manifest: adds the verified remote
/// segments that have no local copy, dooms the ones a local compacted segment replaces (a crash
/// between a compaction's rename and its source deletes), and forgets uploads of segments that
/// no longer exist. Returns the highest segment id the manifest knows.
pub(crate) fn reconcile(
    remote: &Remote,
    segments: &mut Vec<Arc<Segment>>,
    unusable: &mut Vec<(PathBuf, String)>,
) -> Result<u64> {
    let mut m = remote.manifest.lock();
    let local: HashSet<u64> = segments.iter().map(|s| s.id).collect();
    let mut max_id = 0;
    let mut opened = Vec::new();
    for e in m.entries.values() {
        max_id = max_id.max(e.id);
        if e.state == State::Verified && !local.contains(&e.id) {
            match remote.open_segment(e) {
                Ok(s) => opened.push(Arc::new(s)),
                // Its cache is missing or damaged and the bucket does not answer: the store
                // opens without it (ingestion goes on) and says so; the next open retries.
                Err(err) => {
                    log::error!("remote: segment {} unreadable, left out: {err}", e.id);
                    unusable.push((remote.cache.meta_path(e.id), err.to_string()));
                }
            }
        }
    }
    segments.extend(opened);
    // Replaced segments, local or remote, are doomed (their replacement is already in place).
    let replaced: Vec<(u64, u64)> = segments
        .iter()
        .flat_map(|s| s.replaces().iter().map(move |r| (*r, s.id)))
        .collect();
    let mut changed = false;
    for (old, new) in replaced {
        segments.retain(|s| s.id != old || !s.is_remote());
        if let Some(e) = m.entries.get_mut(&old) {
            if !matches!(e.state, State::Doomed { .. }) {
                e.state = State::Doomed { after: Some(new) };
                changed = true;
            }
        }
    }
    // Uploads of segments that are gone locally (never verified) are deleted, in case a
    // whole object made it to the bucket.
    let present: HashSet<u64> = segments.iter().map(|s| s.id).collect();
    for e in m.entries.values_mut() {
        if matches!(e.state, State::Uploading(_)) && !present.contains(&e.id) {
            e.state = State::Doomed { after: None };
            changed = true;
        }
    }
    if changed {
        m.save()?;
    }
    segments.sort_by_key(|s| s.id);
    Ok(max_id)
}

#[cfg(test)]
mod tests {
    use super::parse_segment_key;

    #[test]
    fn segment_keys_parse() {
        assert_eq!(
            parse_segment_key("p/segments/30d/00000000000000000042.seg"),
            Some((30, 42))
        );
        assert_eq!(parse_segment_key("p/segments/30d/x.seg"), None);
        assert_eq!(parse_segment_key("p/meta/KEY"), None);
    }
}
