//! The store's background threads: the flusher (time- and size-triggered flush rounds, which also
//! seal old segments) and maintenance (retention, and compaction when deletions wait or small
//! segments pile up), and the remote tier's uploader. All stop when the store closes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::{IoContext, Result};
use crate::store::Inner;

/// A wake-up flag with a condition variable: `wait` returns when kicked or after a timeout.
#[derive(Default)]
pub(crate) struct Signal {
    kicked: Mutex<bool>,
    cv: Condvar,
}

impl Signal {
    pub fn kick(&self) {
        *self.kicked.lock() = true;
        self.cv.notify_all();
    }

    /// Waits up to `timeout` for a kick; returns whether there was one.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut k = self.kicked.lock();
        if !*k {
            self.cv.wait_for(&mut k, timeout);
        }
        std::mem::take(&mut *k)
    }
}

pub(crate) fn spawn(inner: &Arc<Inner>) -> Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::new();
    let mut start = |name: &str, run: Box<dyn FnOnce(&Inner) + Send>| -> Result<()> {
        let bg = inner.clone();
        let handle = std::thread::Builder::new()
            .name(format!("replaystore-{name}"))
            .spawn(move || run(&bg))
            .ctx(|| format!("spawn the {name} thread"))?;
        threads.push(handle);
        Ok(())
    };
    if inner.config.background_flush {
        start("flush", Box::new(flush_loop))?;
    }
    if let Some(every) = inner.config.maintenance_interval {
        start("maintenance", Box::new(move |i| maintenance_loop(i, every)))?;
        if inner.remote.is_some() {
            start("upload", Box::new(move |i| upload_loop(i, every)))?;
        }
    }
    Ok(threads)
}

/// Runs a flush round on every kick (buffer over `max_buffer_bytes`) and every tick
/// (`flush_interval`, at most 1 s): rounds with nothing buffered still seal old segments.
fn flush_loop(inner: &Inner) {
    let tick = inner.config.flush_interval.min(Duration::from_secs(1));
    while !inner.closed.load(Ordering::Acquire) {
        inner.flush_signal.wait(tick);
        if inner.closed.load(Ordering::Acquire) {
            break;
        }
        if let Err(e) = inner.flush() {
            log::error!("background flush failed: {e}");
        }
    }
}

/// The remote tier's uploader: a sync (upload and verify sealed segments, drop local copies past
/// `local_retention`, delete doomed objects, upload the tombstone log) whenever a segment is
/// sealed and at least every `maintenance_interval`. A failed step is retried the next time.
fn upload_loop(inner: &Inner, every: Duration) {
    while !inner.closed.load(Ordering::Acquire) {
        inner.upload_signal.wait(every);
        if inner.closed.load(Ordering::Acquire) {
            break;
        }
        match inner.remote_sync() {
            Ok(r) if !r.errors.is_empty() => log::error!("remote sync: {:?}", r.errors),
            Ok(r) if r.uploaded + r.local_copies_dropped + r.objects_deleted > 0 => {
                log::info!("remote sync: {r:?}")
            }
            Ok(_) => {}
            Err(e) => log::error!("remote sync failed: {e}"),
        }
    }
}

/// Every `maintenance_interval`: enforce retention, then compact if a deletion is due (its age
/// passed half of `purge_within`, so that requests batch but finish in time) or if compaction
/// has other worthwhile work (small segments to merge, mostly expired segments).
fn maintenance_loop(inner: &Inner, every: Duration) {
    while !inner.closed.load(Ordering::Acquire) {
        let kicked = inner.maintenance_signal.wait(every);
        if inner.closed.load(Ordering::Acquire) {
            break;
        }
        let now = inner.config.clock.now_ms();
        if let Err(e) = inner.enforce_retention(now) {
            log::error!("retention failed: {e}");
        }
        if kicked || inner.compaction_due(now) {
            match inner.compact() {
                Ok(r) if r.segments_rewritten + r.segments_removed > 0 => {
                    log::info!("compaction: {r:?}")
                }
                Ok(_) => {}
                Err(e) => log::error!("compaction failed: {e}"),
            }
        }
    }
}
