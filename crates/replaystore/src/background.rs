//! The store's background threads: the flusher (time- and size-triggered flush rounds, which also
//! seal old segments), maintenance (retention, and compaction when deletions wait or small
//! segments pile up), and the remote tier's uploader. Each holds only the component it drives
//! and waits on its own `Signal`; all stop when their signal is closed.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{IoContext, Result};
use crate::flush::FlushPipeline;
use crate::maintenance::Maintenance;
use crate::signal::Signal;

/// Starts the threads the configuration asks for. `sealed` is kicked when a segment is sealed.
pub(crate) fn spawn(
    pipeline: &Arc<FlushPipeline>,
    maintenance: &Arc<Maintenance>,
    sealed: &Arc<Signal>,
) -> Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::new();
    let mut start = |name: &str, run: Box<dyn FnOnce() + Send>| -> Result<()> {
        let handle = std::thread::Builder::new()
            .name(format!("replaystore-{name}"))
            .spawn(run)
            .ctx(|| format!("spawn the {name} thread"))?;
        threads.push(handle);
        Ok(())
    };
    let config = maintenance.config();
    if config.background_flush {
        let p = pipeline.clone();
        start("flush", Box::new(move || flush_loop(&p)))?;
    }
    if let Some(every) = config.maintenance_interval {
        let m = maintenance.clone();
        start("maintenance", Box::new(move || maintenance_loop(&m, every)))?;
        if maintenance.has_remote() {
            let (m, s) = (maintenance.clone(), sealed.clone());
            start("upload", Box::new(move || upload_loop(&m, &s, every)))?;
        }
    }
    Ok(threads)
}

/// Runs a flush round on every kick (buffer over `max_buffer_bytes`) and every tick
/// (`flush_interval`, at most 1 s): rounds with nothing buffered still seal old segments.
fn flush_loop(pipeline: &FlushPipeline) {
    let tick = pipeline.flush_interval().min(Duration::from_secs(1));
    let signal = pipeline.signal();
    while !signal.is_closed() {
        signal.wait(tick);
        if signal.is_closed() {
            break;
        }
        if let Err(e) = pipeline.flush() {
            log::error!("background flush failed: {e}");
        }
    }
}

/// The remote tier's uploader: a sync (upload and verify sealed segments, drop local copies past
/// `local_retention`, delete doomed objects, upload the tombstone log) whenever a segment is
/// sealed and at least every `maintenance_interval`. A failed step is retried the next time.
fn upload_loop(maintenance: &Maintenance, sealed: &Signal, every: Duration) {
    lower_priority(maintenance.config().background_nice);
    while !sealed.is_closed() {
        sealed.wait(every);
        if sealed.is_closed() {
            break;
        }
        match maintenance.remote_sync() {
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
fn maintenance_loop(maintenance: &Maintenance, every: Duration) {
    lower_priority(maintenance.config().background_nice);
    let signal = maintenance.signal();
    while !signal.is_closed() {
        let kicked = signal.wait(every);
        if signal.is_closed() {
            break;
        }
        let now = maintenance.config().parts.clock.now_ms();
        if let Err(e) = maintenance.enforce_retention(now) {
            log::error!("retention failed: {e}");
        }
        if kicked || maintenance.compaction_due(now) {
            match maintenance.compact() {
                Ok(r) if r.segments_rewritten + r.segments_removed > 0 => {
                    log::info!("compaction: {r:?}")
                }
                Ok(_) => {}
                Err(e) => log::error!("compaction failed: {e}"),
            }
        }
        if let Err(e) = maintenance.checkpoint_index() {
            log::error!("session index checkpoint failed: {e}");
        }
    }
}

/// Lowers the calling thread's priority by `nice` steps from where it is (Linux: nice is per
/// thread and inherited by the threads it starts, so a regroup's compression workers run at it
/// too; relative, because the opener may itself run niced). A failure only logs: priority is a
/// preference, not a correctness matter.
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; getpriority/setpriority on our own thread id
        // only read and change this thread's nice value. getpriority returns -1 both as a value
        // and as an error, so errno is cleared first and checked after.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            *libc::__errno_location() = 0;
            let current = libc::getpriority(libc::PRIO_PROCESS, tid);
            if current == -1 && *libc::__errno_location() != 0 {
                -1
            } else {
                libc::setpriority(libc::PRIO_PROCESS, tid, (current + nice).min(19))
            }
        };
        if rc != 0 {
            log::warn!(
                "could not lower the background threads' priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
