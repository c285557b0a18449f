//! Open-time recovery: torn tails, corrupt blocks and footers, the directory lock.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{chunk, open, segment_files};
use replaystore::{Error, Store};

fn copy_dir(from: &Path, to: &Path) {
    for e in common::files_under(from) {
        let rel = e.strip_prefix(from).unwrap();
        let dst = to.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        if rel != Path::new("LOCK") {
            std::fs::copy(&e, &dst).unwrap();
        }
    }
}

/// A store holding sessions s0..s{n} of one chunk each (`size` bytes), flushed after each chunk
/// or once; sealed if asked. Returns the path of its (first) segment file.
fn store_with_sessions(dir: &Path, n: usize, size: usize, flush_each: bool, seal: bool) -> PathBuf {
    let store = open(dir);
    for i in 0..n {
        store
            .append(chunk(1, &format!("s{i}"), "p", i, size))
            .unwrap();
        if flush_each {
            store.flush().unwrap();
        }
    }
    store.flush().unwrap();
    if seal {
        store.seal_active().unwrap();
    }
    segment_files(dir, common::LANE)[0].clone()
}

fn rw(path: &Path) -> std::fs::File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

#[test]
fn torn_tail_is_cut_at_every_offset_inside_the_last_block() {
    let src = tempfile::tempdir().unwrap();
    let mut lens = Vec::new();
    {
        let store = open(src.path());
        for i in 0..5 {
            store
                .append(chunk(1, &format!("s{i}"), "p", i, 3000))
                .unwrap();
            store.flush().unwrap();
            lens.push(
                std::fs::metadata(&segment_files(src.path(), common::LANE)[0])
                    .unwrap()
                    .len(),
            );
        }
    }
    let (start, end) = (lens[3], lens[4]);
    let cuts: Vec<u64> = (start + 1..end)
        .step_by(((end - start) / 40).max(1) as usize)
        .chain([end - 1])
        .collect();
    for cut in cuts {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(src.path(), dir.path());
        let seg = &segment_files(dir.path(), common::LANE)[0];
        OpenOptions::new()
            .write(true)
            .open(seg)
            .unwrap()
            .set_len(cut)
            .unwrap();

        let store = open(dir.path());
        assert_eq!(store.recovery_report().tails_cut.len(), 1, "cut at {cut}");
        for i in 0..4 {
            let s = store
                .read_session(1, &format!("s{i}"))
                .unwrap()
                .expect("earlier block kept");
            assert_eq!(
                s.chunks[0].payload,
                chunk(1, &format!("s{i}"), "p", i, 3000).payload
            );
        }
        assert!(
            store.read_session(1, "s4").unwrap().is_none(),
            "torn block dropped (cut at {cut})"
        );
        assert_eq!(
            std::fs::metadata(seg).unwrap().len(),
            start,
            "file cut back to the last good block"
        );
        // The store accepts writes after the cut, and they survive another reopen.
        store.append(chunk(1, "after", "p", 9, 500)).unwrap();
        store.flush().unwrap();
        drop(store);
        let store = open(dir.path());
        assert!(store.recovery_report().tails_cut.is_empty());
        assert!(store.read_session(1, "after").unwrap().is_some());
        assert_eq!(store.stats().unwrap().sessions, 5);
    }
}

#[test]
fn zeroed_or_garbage_tail_is_cut() {
    for garbage in [vec![0u8; 4096], b"RBLK\xff\xff\xff\x7fnot a block".to_vec()] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            store.append(chunk(1, "a", "p", 0, 2000)).unwrap();
            store.flush().unwrap();
        }
        let seg = &segment_files(dir.path(), common::LANE)[0];
        let len = std::fs::metadata(seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(seg)
            .unwrap()
            .write_all_at(&garbage, len)
            .unwrap();
        let store = open(dir.path());
        assert_eq!(store.recovery_report().tails_cut.len(), 1);
        assert!(store.read_session(1, "a").unwrap().is_some());
        assert_eq!(std::fs::metadata(seg).unwrap().len(), len);
    }
}

#[test]
fn flipped_bit_in_a_sealed_segment_fails_only_its_block() {
    let dir = tempfile::tempdir().unwrap();
    let seg = store_with_sessions(dir.path(), 20, 2000, false, true);
    let f = rw(&seg);
    // Flip one bit in the middle of the first block (blocks start right after the 32-byte header).
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 32 + 200).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], 32 + 200).unwrap();
    drop(f);

    let store = open(dir.path());
    assert_eq!(
        store.recovery_report().sealed_segments,
        1,
        "the footer is intact: no scan"
    );
    let mut corrupt = 0;
    for i in 0..20 {
        match store.read_session(1, &format!("s{i}")) {
            Ok(Some(s)) => assert_eq!(
                s.chunks[0].payload,
                chunk(1, &format!("s{i}"), "p", i, 2000).payload
            ),
            Err(Error::Corrupt {
                segment,
                offset,
                path,
                ..
            }) => {
                assert_eq!((segment, offset), (1, 32));
                assert_eq!(path, seg);
                corrupt += 1;
            }
            other => panic!("session s{i}: {other:?}"),
        }
    }
    assert_eq!(corrupt, 1);
}

#[test]
fn corrupt_block_in_the_middle_of_an_active_segment_is_skipped_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let seg = store_with_sessions(dir.path(), 4, 2000, true, false);
    let f = rw(&seg);
    f.write_all_at(b"XX", 32 + 300).unwrap(); // inside the first block's payload
    let len = f.metadata().unwrap().len();
    drop(f);
    let store = open(dir.path());
    assert_eq!(store.recovery_report().corrupt_blocks.len(), 1);
    assert!(store.recovery_report().tails_cut.is_empty());
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        len,
        "acknowledged blocks after it are kept"
    );
    assert!(store.read_session(1, "s0").unwrap().is_none());
    for i in 1..4 {
        assert!(store.read_session(1, &format!("s{i}")).unwrap().is_some());
    }
}

#[test]
fn bad_footer_falls_back_to_scanning_the_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let seg = store_with_sessions(dir.path(), 10, 1000, false, true);
    let f = rw(&seg);
    let len = f.metadata().unwrap().len();
    let mut t = [0u8; 8];
    f.read_exact_at(&mut t, len - 32).unwrap();
    let footer_at = u64::from_le_bytes(t);
    f.write_all_at(&[0xEE], footer_at + 30).unwrap(); // inside the footer's fixed part
    drop(f);
    let store = open(dir.path());
    assert_eq!(store.recovery_report().scanned_segments, 1);
    for i in 0..10 {
        assert!(store.read_session(1, &format!("s{i}")).unwrap().is_some());
    }
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        len,
        "a sealed file is never cut"
    );
}

#[test]
fn second_open_of_a_locked_directory_fails_with_locked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append(chunk(1, "a", "p", 0, 100)).unwrap();
    store.flush().unwrap();
    match Store::open(dir.path(), common::config()) {
        Err(Error::Locked { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    // The failed open changed nothing.
    assert!(store.read_session(1, "a").unwrap().is_some());
    drop(store);
    let store = open(dir.path());
    assert!(store.read_session(1, "a").unwrap().is_some());
}

#[test]
fn older_unsealed_segments_are_sealed_at_open() {
    // Two unsealed segments in one lane (as after a crash between roll and seal): the older is
    // sealed at open, the newer resumed.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.append(chunk(1, "a", "p", 0, 1000)).unwrap();
        store.flush().unwrap();
    }
    let first = segment_files(dir.path(), common::LANE)[0].clone();
    let copy = first.with_file_name("00000000000000000007.seg");
    std::fs::copy(&first, &copy).unwrap();
    // Give the copy its own id in its header so the two are distinct segments.
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes[8..16].copy_from_slice(&7u64.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&copy, &bytes).unwrap();
    let store = open(dir.path());
    let st = store.stats().unwrap();
    assert_eq!((st.segments, st.sealed_segments), (2, 1));
    store.append(chunk(1, "b", "p", 1, 100)).unwrap();
    store.flush().unwrap();
    assert_eq!(
        store.stats().unwrap().segments,
        2,
        "appends resume the newest segment"
    );
}
