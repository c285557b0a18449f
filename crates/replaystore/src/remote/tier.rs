//! `RemoteTier`: the remote tier as a component of the store. It owns the tier's state (the
//! object-store client, the footer cache and scratch space as `Objects`, the manifest, what the
//! meta files were last uploaded as) and its lock; the store's other components reach it only
//! through the methods below.
//!
//! Who drives it: `Maintenance`, under the maintenance lock (the upload thread, the maintenance
//! thread through retention and compaction, and the `Store` calls that run those now), because
//! a sync replaces sealed segments by their remote twins and retention and compaction remove
//! sealed segments: those edits are serialised by that lock (docs/design.md, component map).
//! The tier's own `pass` lock makes its steps one at a time whoever calls them: an upload never
//! overwrites the `Doomed` state a concurrent `doom` just recorded.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::adopt::Adoption;
use super::api::RemoteStatus;
use super::manifest::{Manifest, State};
use super::objects::Objects;
use super::sync::{delete_doomed, MetaUploads, SyncPass, SyncReport};
use super::RemoteConfig;
use crate::error::Result;
use crate::fs::Fs;
use crate::segment::Segment;
use crate::segment_set::{SegmentSet, Version};

pub(crate) struct RemoteTier {
    dir: PathBuf,
    fs: Fs,
    /// The client, footer cache and scratch space; every remote segment holds it too (as its
    /// `segment::ObjectSource`).
    objects: Arc<Objects>,
    /// Which segments are in the bucket, and in what state. A leaf lock: held for one change
    /// and its save, never across a request.
    manifest: Mutex<Manifest>,
    /// One step of the tier at a time (a sync pass, dooming, deleting doomed objects, uploading
    /// the meta files); it holds what the meta files were last uploaded as.
    pass: Mutex<MetaUploads>,
}

impl RemoteTier {
    /// Opens the remote state of the store in `dir`. With no manifest yet and no local
    /// segment (a store moved to this machine, or a new one), the bucket is listed and every
    /// segment in it adopted: the bucket must answer. A store that already has local segments
    /// and gets a tier for the first time starts with an empty manifest and needs the bucket
    /// only to upload, so it opens (and ingests) while the bucket is unreachable.
    pub fn open(dir: &Path, fs: &Fs, config: RemoteConfig, has_local: bool) -> Result<RemoteTier> {
        let objects = Arc::new(Objects::open(dir, fs, config)?);
        let fresh = !fs.exists(&dir.join("REMOTE"));
        let mut manifest = Manifest::open(dir, fs)?;
        if fresh && !has_local {
            let client = &objects.client;
            Adoption { client, dir, fs }.run(&mut manifest)?;
        } else if fresh {
            manifest.save()?;
        }
        Ok(RemoteTier {
            dir: dir.to_path_buf(),
            fs: fs.clone(),
            objects,
            manifest: Mutex::new(manifest),
            pass: Mutex::new(MetaUploads::default()),
        })
    }

    /// One pass of the tier at `now` (store clock; see `sync::SyncPass`). The caller holds the
    /// maintenance lock.
    pub fn sync(&self, segments: &SegmentSet, now: i64) -> Result<SyncReport> {
        let mut meta = self.pass.lock();
        let pass = SyncPass {
            dir: &self.dir,
            fs: &self.fs,
            objects: &self.objects,
            manifest: &self.manifest,
            meta: &mut meta,
            segments,
        };
        pass.run(now)
    }

    /// Deletes the objects of doomed entries whose replacement (if any) is verified or no
    /// longer in `live`; returns how many.
    pub fn delete_doomed(&self, live: &Version) -> Result<u64> {
        let _pass = self.pass.lock();
        delete_doomed(&self.objects, &self.manifest, live)
    }

    /// Uploads the meta files (tombstone log, key) whose content changed since the last upload.
    pub fn upload_meta(&self) -> Result<u64> {
        let mut meta = self.pass.lock();
        meta.upload(&self.objects, &self.fs, &self.dir)
    }

    /// Marks segments that left the store (expired, or replaced by `replaced_by`) for deletion
    /// from the bucket; segments never uploaded are only forgotten. Called before their local
    /// files go, so a crash cannot leave an object nobody will delete.
    pub fn doom(&self, ids: &[u64], replaced_by: Option<u64>) -> Result<()> {
        let _pass = self.pass.lock();
        let mut m = self.manifest.lock();
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
    pub fn deletes_pending(&self) -> bool {
        self.manifest
            .lock()
            .entries
            .values()
            .any(|e| matches!(e.state, State::Doomed { .. }))
    }

    /// Open-time reconciliation of the local segments with the manifest: adds the verified remote
    /// segments that have no local copy, dooms the ones a local compacted segment replaces (a crash
    /// between a compaction's rename and its source deletes), and forgets uploads of segments that
    /// no longer exist. Returns the highest segment id the manifest knows.
    pub fn reconcile(
        &self,
        segments: &mut Vec<Arc<Segment>>,
        unusable: &mut Vec<(PathBuf, String)>,
    ) -> Result<u64> {
        let mut m = self.manifest.lock();
        let local: HashSet<u64> = segments.iter().map(|s| s.id).collect();
        let mut max_id = 0;
        let mut opened = Vec::new();
        for e in m.entries.values() {
            max_id = max_id.max(e.id);
            if e.state == State::Verified && !local.contains(&e.id) {
                match self.objects.open_segment(e) {
                    Ok(s) => opened.push(Arc::new(s)),
                    // Its cache is missing or damaged and the bucket does not answer: the store
                    // opens without it (ingestion goes on) and says so; the next open retries.
                    Err(err) => {
                        log::error!("remote: segment {} unreadable, left out: {err}", e.id);
                        unusable.push((self.objects.cache.meta_path(e.id), err.to_string()));
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

    /// Where the tier stands (`Store::remote_status`): manifest states, request counters, and
    /// how many segments of `current` are held only in the bucket.
    pub fn status(&self, current: &Version) -> RemoteStatus {
        let client = &self.objects.client;
        let mut st = RemoteStatus {
            url: client.url.clone(),
            requests: client.stats(),
            footer_cache_bytes: self.objects.cache.used_bytes(),
            ..RemoteStatus::default()
        };
        for e in self.manifest.lock().entries.values() {
            match e.state {
                State::Verified => st.verified += 1,
                State::Uploading(_) => st.uploading += 1,
                State::Doomed { .. } => st.doomed += 1,
            }
        }
        st.remote_only = current.segments().iter().filter(|s| s.is_remote()).count() as u64;
        st
    }
}
