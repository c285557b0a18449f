//! Open-time recovery: find every segment of every lane, map sealed ones by their footer (no
//! scan), scan unsealed ones block by block, cut torn tails, resume the newest unsealed segment
//! of each lane as its active segment and seal the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{IoContext, Result};
use crate::format::segment::TRAILER_MAGIC;
use crate::format::{SegmentHeader, SEGMENT_HEADER_LEN, TRAILER_LEN};
use crate::fs::Fs;
use crate::segment::{scan_blocks, MemIndex, Segment};
use crate::storage::{FileHandle, OpenMode};
use crate::writer::ActiveWriter;

/// What open found and repaired; also logged.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Sealed segments opened from their footer alone.
    pub sealed_segments: usize,
    /// Segments rebuilt by scanning their blocks (active, or with a bad footer).
    pub scanned_segments: usize,
    /// Torn tails cut: file, offset of the cut, why the block there was refused.
    pub tails_cut: Vec<(PathBuf, u64, String)>,
    /// Corrupt blocks found between good ones and skipped (their data is unreadable).
    pub corrupt_blocks: Vec<(PathBuf, u64, String)>,
    /// Files in a lane directory that could not be used at all (left in place, untouched).
    pub unusable_files: Vec<(PathBuf, String)>,
    /// Empty segment files (no block) removed.
    pub empty_removed: usize,
    /// Segments removed because a compacted segment replaces them (crash during compaction).
    pub superseded_removed: usize,
    /// Temporary files of an interrupted compaction removed.
    pub temp_files_removed: usize,
}

pub(crate) struct Recovered {
    pub segments: Vec<Arc<Segment>>,
    pub writers: BTreeMap<u16, ActiveWriter>,
    pub next_segment_id: u64,
    pub next_seq: u64,
    pub report: RecoveryReport,
}

struct Found {
    path: PathBuf,
    header: SegmentHeader,
    file: FileHandle,
    len: u64,
}

/// Which unsealed segment is resumed (its lane's newest, if younger than `max_age_ms` at
/// `now_ms`) and how the others are sealed.
struct ResumeRule<'a> {
    now_ms: i64,
    max_age_ms: i64,
    annotator: Option<&'a dyn crate::annotation::Annotator>,
}

/// An unsealed segment after its scan: candidate to be resumed as its lane's active segment.
struct Unsealed {
    found: Found,
    index: MemIndex,
    /// Its length once the torn tail (if any) is cut.
    good_len: u64,
}

/// Unsealed segments left behind that are not resumed are sealed, their blocks' annotations
/// merged by `annotator`.
pub(crate) fn recover(
    dir: &Path,
    fs: &Fs,
    now_ms: i64,
    max_age_ms: i64,
    annotator: Option<&dyn crate::annotation::Annotator>,
) -> Result<Recovered> {
    let mut out = Recovered {
        segments: Vec::new(),
        writers: BTreeMap::new(),
        next_segment_id: 1,
        next_seq: 1,
        report: RecoveryReport::default(),
    };
    // Unsealed segments per lane, to decide which one to resume.
    let mut unsealed: BTreeMap<u16, Vec<Unsealed>> = BTreeMap::new();
    let (segments, max_file_id) = list_segments(dir, fs, &mut out.report)?;
    out.next_segment_id = max_file_id + 1;
    for found in segments {
        out.next_segment_id = out.next_segment_id.max(found.header.segment_id + 1);
        if let Some(u) = open_found(fs, found, &mut out)? {
            let lane = u.found.header.lane_days;
            unsealed.entry(lane).or_default().push(u);
        }
    }
    remove_superseded(fs, &mut out, &mut unsealed)?;
    for (lane, list) in unsealed {
        let rule = ResumeRule {
            now_ms,
            max_age_ms,
            annotator,
        };
        resume_or_seal(fs, lane, list, &rule, &mut out)?;
    }
    out.segments.sort_by_key(|s| s.id);
    Ok(out)
}

/// Opens one segment file: sealed ones from their footer (into `out`); the others are scanned,
/// their corrupt blocks reported. One with a trailer but a bad footer is served read-only from
/// the scan (into `out`); an unsealed one has its torn tail cut and is returned.
fn open_found(fs: &Fs, found: Found, out: &mut Recovered) -> Result<Option<Unsealed>> {
    let has_trailer = found.len >= (SEGMENT_HEADER_LEN + TRAILER_LEN) as u64 && {
        let mut t = [0u8; 8];
        found.file.read_exact_at(&mut t, found.len - 8).is_ok() && t == TRAILER_MAGIC
    };
    if has_trailer {
        let dup = found.file.clone();
        match Segment::open_sealed(&found.path, found.header, dup, found.len) {
            Ok(seg) => {
                out.next_seq = out.next_seq.max(seg.totals().max_seq + 1);
                out.report.sealed_segments += 1;
                out.segments.push(Arc::new(seg));
                return Ok(None);
            }
            Err(e) => log::warn!("{e}; rebuilding its index from its blocks"),
        }
    }
    let map = fs.map(&found.file, &found.path)?;
    let scan = scan_blocks(&map, found.len, found.header.created_ms);
    drop(map);
    out.report.scanned_segments += 1;
    for (off, why) in &scan.skipped {
        log::error!(
            "{}: corrupt block at {off} skipped: {why}",
            found.path.display()
        );
        out.report
            .corrupt_blocks
            .push((found.path.clone(), *off, why.clone()));
    }
    out.next_seq = out.next_seq.max(scan.index.totals.max_seq + 1);
    if has_trailer {
        // Sealed once but its footer is bad: serve it read-only from the scanned index.
        let index = Arc::new(RwLock::new(scan.index));
        let seg = Segment::in_memory(&found.path, found.header, found.file, index);
        out.segments.push(Arc::new(seg));
        return Ok(None);
    }
    if let Some((off, why)) = &scan.tail {
        log::warn!(
            "{}: cutting torn tail at {off}: {why}",
            found.path.display()
        );
        out.report
            .tails_cut
            .push((found.path.clone(), *off, why.clone()));
    }
    if found.len != scan.good_len {
        fs.truncate(&found.file, &found.path, scan.good_len)
            .and_then(|_| fs.sync(&found.file, &found.path, true))
            .ctx(|| format!("cut torn tail of {}", found.path.display()))?;
    }
    Ok(Some(Unsealed {
        good_len: scan.good_len,
        index: scan.index,
        found,
    }))
}

/// Compaction outputs list the segments they replace; a crash between renaming the output
/// into place and removing its sources leaves both. The sources go now.
fn remove_superseded(
    fs: &Fs,
    out: &mut Recovered,
    unsealed: &mut BTreeMap<u16, Vec<Unsealed>>,
) -> Result<()> {
    let replaced: Vec<u64> = out
        .segments
        .iter()
        .flat_map(|s| s.replaces().to_vec())
        .collect();
    if replaced.is_empty() {
        return Ok(());
    }
    let (gone, keep): (Vec<_>, Vec<_>) = out
        .segments
        .drain(..)
        .partition(|s| replaced.contains(&s.id));
    out.segments = keep;
    for list in unsealed.values_mut() {
        list.retain(|u| !replaced.contains(&u.found.header.segment_id));
    }
    for s in gone {
        log::warn!(
            "{}: superseded by a compacted segment, removing",
            s.path.display()
        );
        fs.remove(&s.path)
            .ctx(|| format!("remove {}", s.path.display()))?;
        out.report.superseded_removed += 1;
    }
    Ok(())
}

/// The unsealed segments of one lane: empty ones are removed, the newest is resumed as the
/// lane's active segment if it is younger than `max_age_ms`, the others are sealed now.
fn resume_or_seal(
    fs: &Fs,
    lane: u16,
    mut list: Vec<Unsealed>,
    rule: &ResumeRule<'_>,
    out: &mut Recovered,
) -> Result<()> {
    list.sort_by_key(|u| u.found.header.segment_id);
    let newest = list.len().saturating_sub(1);
    for (i, u) in list.into_iter().enumerate() {
        let f = u.found;
        if u.index.totals.block_count == 0 {
            fs.remove(&f.path)
                .ctx(|| format!("remove empty {}", f.path.display()))?;
            out.report.empty_removed += 1;
            continue;
        }
        let writer = ActiveWriter::resume(fs, &f.path, f.header, f.file, u.index, u.good_len)?;
        let young = rule.now_ms.saturating_sub(f.header.created_ms) < rule.max_age_ms;
        if i == newest && young {
            out.segments.push(writer.segment.clone());
            out.writers.insert(lane, writer);
        } else {
            out.segments.push(Arc::new(writer.seal(rule.annotator)?));
        }
    }
    Ok(())
}

/// Every `lanes/<days>d/<id>.seg` with a valid header. Files too short to hold a header are
/// creations torn by a crash (the header is fsynced before any block) and are removed.
/// Also returns the highest id found in a file name, so that new ids never collide even with
/// an unusable file.
fn list_segments(dir: &Path, fs: &Fs, report: &mut RecoveryReport) -> Result<(Vec<Found>, u64)> {
    let lanes = dir.join("lanes");
    let mut found = Vec::new();
    let mut max_id = 0u64;
    // Only a missing directory means "no segment": any other error must not open the store
    // as empty.
    let entries = match fs.list(&lanes) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((found, max_id)),
        Err(e) => return Err(crate::Error::io(format!("list {}", lanes.display()), e)),
    };
    for lane in entries.into_iter().filter(|l| fs.is_dir(l)) {
        let files = fs.list(&lane).ctx(|| format!("list {}", lane.display()))?;
        for path in files {
            if path.extension().is_some_and(|e| e == "tmp") {
                log::warn!(
                    "{}: removing an interrupted compaction's temp file",
                    path.display()
                );
                fs.remove(&path)
                    .ctx(|| format!("remove {}", path.display()))?;
                report.temp_files_removed += 1;
                continue;
            }
            if path.extension().is_none_or(|e| e != "seg") {
                continue;
            }
            let name_id = path
                .file_stem()
                .and_then(|s| s.to_str()?.parse::<u64>().ok());
            max_id = max_id.max(name_id.unwrap_or(0));
            found.extend(open_segment_file(fs, path, report)?);
        }
    }
    Ok((found, max_id))
}

/// Opens one `.seg` file and reads its header. A file too short for one (a torn creation) is
/// removed; one whose header fails its checks is reported and left in place.
fn open_segment_file(fs: &Fs, path: PathBuf, report: &mut RecoveryReport) -> Result<Option<Found>> {
    let file = fs.open_ctx(&path, OpenMode::ReadWrite)?;
    let len = file.size().ctx(|| format!("stat {}", path.display()))?;
    if len < SEGMENT_HEADER_LEN as u64 {
        log::warn!(
            "{}: removing a segment whose creation was torn",
            path.display()
        );
        fs.remove(&path)
            .ctx(|| format!("remove {}", path.display()))?;
        report.empty_removed += 1;
        return Ok(None);
    }
    let mut buf = [0u8; SEGMENT_HEADER_LEN];
    file.read_exact_at(&mut buf, 0)
        .ctx(|| format!("read {}", path.display()))?;
    match SegmentHeader::decode(&buf) {
        Ok(header) => Ok(Some(Found {
            path,
            header,
            file,
            len,
        })),
        Err(e) => {
            log::error!(
                "{}: unusable segment, left in place: {}",
                path.display(),
                e.0
            );
            report.unusable_files.push((path, e.0));
            Ok(None)
        }
    }
}
