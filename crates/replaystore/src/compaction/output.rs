//! A compaction output: a new segment written to a temp file, then swapped in for its sources
//! with the crash-safe sequence of the module comment (fsync, rename, fsync directory, swap for
//! readers, unlink sources, fsync directory).

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, IoContext, Result};
use crate::failpoint::crash_point;
use crate::format::footer::encode_footer;
use crate::format::{BlockHeader, SegmentHeader, Trailer, SEGMENT_HEADER_LEN};
use crate::segment::{MemIndex, Segment};
use crate::segment_set::Edit;
use crate::storage::{Appender, OpenMode};
use crate::writer::segment_path;

use super::{CompactionReport, Compactor};

pub(super) struct Output<'a> {
    inner: &'a Compactor<'a>,
    path: PathBuf,
    tmp: PathBuf,
    header: SegmentHeader,
    /// Until the file is renamed into place, it goes away with any error.
    guard: TempFile,
    out: BufWriter<Appender>,
    index: MemIndex,
    len: u64,
}

impl<'a> Output<'a> {
    pub fn create(inner: &'a Compactor<'a>, lane: u16, created_ms: i64) -> Result<Self> {
        let id = inner.segments.allocate_id();
        // A store opened from the bucket alone has no lane directory for remote segments.
        crate::writer::ensure_lane_dir(inner.fs, inner.dir, lane)?;
        let path = segment_path(inner.dir, lane, id);
        let tmp = path.with_extension("seg.tmp");
        let header = SegmentHeader {
            lane_days: lane,
            segment_id: id,
            created_ms,
        };
        let guard = TempFile(Some((inner.fs.clone(), tmp.clone())));
        let file = inner
            .fs
            .open(&tmp, OpenMode::CreateTruncate)
            .ctx(|| format!("create {}", tmp.display()))?;
        let mut o = Output {
            inner,
            path,
            tmp,
            header,
            guard,
            out: BufWriter::with_capacity(1 << 20, Appender(file)),
            index: MemIndex::default(),
            len: SEGMENT_HEADER_LEN as u64,
        };
        o.write(&header.encode())?;
        Ok(o)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner
            .fs
            .write(&mut self.out, &self.tmp, bytes)
            .ctx(|| format!("write {}", self.tmp.display()))
    }

    /// Appends one whole block (its bytes and parsed header).
    pub fn push(&mut self, bytes: &[u8], h: &BlockHeader) -> Result<()> {
        self.write(bytes)?;
        // A block of format 1 copied here takes this segment's creation time as its arrival:
        // the earliest of its sources', so never later than where it came from.
        self.index.add_block(h, self.len, self.header.created_ms);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Writes the footer (replacing `sources`, with `flags`), makes the file durable, puts it
    /// in place of the sources for readers, and removes the sources. With no block written,
    /// only removes the sources (nothing of them survives).
    pub fn commit(
        mut self,
        sources: &[Arc<Segment>],
        flags: u32,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let inner = self.inner;
        let fs = &inner.fs;
        let source_ids: Vec<u64> = sources.iter().map(|s| s.id).collect();
        let lane_dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        if self.index.totals.block_count == 0 {
            drop(self.out);
            let edit = source_ids
                .iter()
                .fold(Edit::default(), |e, id| e.remove(*id));
            inner.segments.apply(edit);
            inner.doom_remote(&source_ids, None)?;
            remove_sources(inner, sources, &lane_dir)?;
            report.segments_removed += sources.len() as u64;
            return Ok(());
        }
        let mut totals = self.index.totals;
        totals.flags = flags;
        let annotator = inner.config.parts.annotator.as_deref();
        let mut entries = self.index.footer_entries(annotator);
        let (footer, crc) = encode_footer(&mut entries, totals, &source_ids);
        let trailer = Trailer {
            footer_offset: self.len,
            footer_len: footer.len() as u32,
            footer_crc: crc,
            version: crate::format::FORMAT_VERSION,
        };
        self.write(&footer)?;
        self.write(&trailer.encode())?;
        let tmp = self.tmp.clone();
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(format!("write {}", tmp.display()), e.into_error()))?
            .0;
        fs.sync(&file, &tmp, true)
            .ctx(|| format!("fsync {}", tmp.display()))?;
        let total = self.len + footer.len() as u64 + trailer.encode().len() as u64;
        crash_point("compact:after_write");
        fs.rename(&tmp, &self.path)
            .ctx(|| format!("rename {} into place", tmp.display()))?;
        self.guard.0 = None;
        crash_point("compact:after_rename");
        fs.sync_dir_ctx(&lane_dir)?;
        let seg = Arc::new(Segment::open_sealed(&self.path, self.header, file, total)?);
        let edit = source_ids
            .iter()
            .fold(Edit::default(), |e, id| e.remove(*id));
        inner.segments.apply(edit.add(seg));
        crash_point("compact:before_remove");
        // Sources in the bucket go once this segment is uploaded and verified there.
        inner.doom_remote(&source_ids, Some(self.header.segment_id))?;
        remove_sources(inner, sources, &lane_dir)?;
        report.segments_rewritten += sources.len() as u64;
        report.segments_written += 1;
        report.bytes_written += total;
        log::info!(
            "compaction: segments {source_ids:?} -> {} ({total} bytes)",
            self.path.display()
        );
        Ok(())
    }
}

fn remove_sources(inner: &Compactor, sources: &[Arc<Segment>], lane_dir: &Path) -> Result<()> {
    for s in sources.iter().filter(|s| !s.is_remote()) {
        inner
            .fs
            .remove(&s.path)
            .ctx(|| format!("remove {}", s.path.display()))?;
    }
    inner.fs.sync_dir_ctx(lane_dir)
}

/// Removes a temp file when dropped, unless disarmed (`.0 = None`) once it is in place.
struct TempFile(Option<(crate::fs::Fs, PathBuf)>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some((fs, p)) = self.0.take() {
            fs.remove_quietly(&p);
        }
    }
}
