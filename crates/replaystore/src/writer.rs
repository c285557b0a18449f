//! The active segment of one lane: appends batches of encoded blocks, makes them durable, and
//! seals the file (footer + trailer) when it is full or old.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::annotation::Annotator;
use crate::error::{IoContext, Result};
use crate::format::footer::encode_footer;
use crate::format::{BlockHeader, SegmentHeader, Trailer, SEGMENT_HEADER_LEN};
use crate::fs::Fs;
use crate::segment::{MemIndex, Segment};
use crate::storage::{FileHandle, OpenMode};

/// Path of segment `id` of the lane that keeps data `lane_days` days.
pub(crate) fn segment_path(dir: &Path, lane_days: u16, id: u64) -> PathBuf {
    lane_dir(dir, lane_days).join(format!("{id:020}.seg"))
}

pub(crate) fn lane_dir(dir: &Path, lane_days: u16) -> PathBuf {
    dir.join("lanes").join(format!("{lane_days}d"))
}

/// Creates `lanes/<days>d/` if it is missing, with its entries up to the store root made
/// durable, so that a segment created in it (an active one, a compaction output) can be found
/// by open after a crash. Nothing is written when the directory exists.
pub(crate) fn ensure_lane_dir(fs: &Fs, dir: &Path, lane_days: u16) -> Result<PathBuf> {
    let lane = lane_dir(dir, lane_days);
    if fs.is_dir(&lane) {
        return Ok(lane);
    }
    fs.create_dir_all(&lane)?;
    if let Some(lanes) = lane.parent() {
        fs.sync_dir_ctx(lanes)?;
    }
    fs.sync_dir_ctx(dir)?;
    Ok(lane)
}

pub(crate) struct ActiveWriter {
    fs: Fs,
    /// The segment as readers see it (in-memory index, read through the file).
    pub segment: Arc<Segment>,
    /// The same index the segment holds; only the flush leader writes to it.
    index: Arc<RwLock<MemIndex>>,
    file: FileHandle,
    /// Bytes written and fsynced: everything before this offset is durable.
    pub len: u64,
}

impl ActiveWriter {
    /// Creates a new segment file: header written and fsynced, directory entry fsynced, so that
    /// any block later acknowledged in it can be found by open.
    pub fn create(fs: &Fs, dir: &Path, lane_days: u16, id: u64, now_ms: i64) -> Result<Self> {
        let lane = lane_dir(dir, lane_days);
        fs.create_dir_all(&lane)?;
        let path = segment_path(dir, lane_days, id);
        let file = fs
            .open(&path, OpenMode::CreateNew)
            .ctx(|| format!("create {}", path.display()))?;
        let header = SegmentHeader {
            lane_days,
            segment_id: id,
            created_ms: now_ms,
        };
        fs.write_at(&file, &path, &header.encode(), 0)
            .and_then(|_| fs.sync(&file, &path, true))
            .ctx(|| format!("write header of {}", path.display()))?;
        // The file's directory entry, and the lane directory's own entries up to the store root
        // (they may have just been created), must be durable before a block in it is acked.
        fs.sync_dir_ctx(&lane)?;
        if let Some(lanes) = lane.parent() {
            fs.sync_dir_ctx(lanes)?;
        }
        fs.sync_dir_ctx(dir)?;
        log::debug!("created segment {}", path.display());
        Self::resume(
            fs,
            &path,
            header,
            file,
            MemIndex::default(),
            SEGMENT_HEADER_LEN as u64,
        )
    }

    /// Continues appending to a segment found unsealed at open (its tail already cut).
    pub fn resume(
        fs: &Fs,
        path: &Path,
        header: SegmentHeader,
        file: FileHandle,
        index: MemIndex,
        len: u64,
    ) -> Result<Self> {
        let reader = file.clone();
        let index = Arc::new(RwLock::new(index));
        Ok(ActiveWriter {
            fs: fs.clone(),
            segment: Arc::new(Segment::in_memory(path, header, reader, index.clone())),
            index,
            file,
            len,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len == SEGMENT_HEADER_LEN as u64
    }

    /// Writes `bytes` (whole blocks) at the end and fdatasyncs. Only after this returns are the
    /// blocks added to the index (`publish`), so readers never see data that is not durable.
    /// On error the file is cut back to its durable length (best effort); the caller must not
    /// trust this writer again if that also fails.
    pub fn write_durable(&mut self, bytes: &[u8]) -> Result<()> {
        let path = &self.segment.path;
        let res = self
            .fs
            .write_at(&self.file, path, bytes, self.len)
            .and_then(|_| self.fs.sync(&self.file, path, false))
            .ctx(|| format!("write {} bytes to {}", bytes.len(), path.display()));
        if res.is_err() {
            self.fs
                .truncate(&self.file, path, self.len)
                .and_then(|_| self.fs.sync(&self.file, path, false))
                .ctx(|| {
                    format!(
                        "cut {} back to {} after a failed write",
                        path.display(),
                        self.len
                    )
                })?;
        }
        res?;
        Ok(())
    }

    /// Makes blocks written by the last `write_durable` visible to readers.
    pub fn publish(&mut self, blocks: &[(BlockHeader, u64)], written: u64) {
        let mut m = self.index.write();
        for (h, rel) in blocks {
            m.add_block(h, self.len + rel, self.segment.created_ms);
        }
        self.len += written;
    }

    /// Seals the segment: footer and trailer appended and fsynced, file mapped read-only.
    /// The annotations of each session's blocks are merged by `annotator` into its record.
    pub fn seal(self, annotator: Option<&dyn Annotator>) -> Result<Segment> {
        let seg = &self.segment;
        let (mut entries, totals) = {
            let m = self.index.read();
            (m.footer_entries(annotator), m.totals)
        };
        let (mut footer, crc) = encode_footer(&mut entries, totals, &[]);
        let trailer = Trailer {
            footer_offset: self.len,
            footer_len: footer.len() as u32,
            footer_crc: crc,
            version: crate::format::FORMAT_VERSION,
        };
        footer.extend_from_slice(&trailer.encode());
        let path = seg.path.clone();
        self.fs
            .write_at(&self.file, &path, &footer, self.len)
            .and_then(|_| self.fs.sync(&self.file, &path, false))
            .ctx(|| format!("seal {}", path.display()))?;
        let header = SegmentHeader {
            lane_days: seg.lane_days,
            segment_id: seg.id,
            created_ms: seg.created_ms,
        };
        let len = self.len + footer.len() as u64;
        log::debug!(
            "sealed {} ({len} bytes, {} sessions)",
            path.display(),
            entries.len()
        );
        Segment::open_sealed(&path, header, self.file, len)
    }
}
