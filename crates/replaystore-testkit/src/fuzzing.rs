//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the regular test that runs them
//! over the seed corpus plus random inputs on stable Rust (`tests/fuzz_inputs.rs`). Each takes
//! arbitrary bytes and must return without panicking, hanging, or allocating beyond the bounds
//! the format sets; errors are the expected outcome for most inputs.

use replaystore::format::block::{decode_payloads, parse_block};
use replaystore::format::{FooterFormat, FooterView, Trailer, TRAILER_LEN};

/// The block decoder: header, checksum, chunk table, decompression.
pub fn block(data: &[u8]) {
    if let Ok(h) = parse_block(data) {
        let _ = decode_payloads(&h, data);
    }
}

/// The segment trailer and footer parsers, and lookups through a parsed footer.
pub fn footer(data: &[u8]) {
    if data.len() < TRAILER_LEN {
        return;
    }
    let Ok(t) = Trailer::decode(&data[data.len() - TRAILER_LEN..], data.len() as u64) else {
        // Also parse the bytes as a bare footer, with a crc that matches their start.
        let n = data.len().min(96);
        let crc = crc32fast::hash(&data[..n]);
        for version in [1, 2] {
            let format = FooterFormat {
                version,
                legacy_arrival_ms: 0,
            };
            let _ = FooterView::parse(data, 0, data.len() as u32, crc, format);
        }
        return;
    };
    let format = t.footer_format(0);
    if let Ok(f) = FooterView::parse(data, t.footer_offset, t.footer_len, t.footer_crc, format) {
        for i in 0..f.session_count.min(64) {
            let _ = f.entry(data, i);
        }
        let _ = f.find(data, 1, "session");
        let _ = f.team_range(data, 1);
    }
}

/// Opening a directory that holds `data` as a segment file, then reading everything it lists
/// (on the simulated disk: no file system work per input).
pub fn open_dir(data: &[u8]) {
    use replaystore::storage::{OpenMode, SimStorage, Storage};
    let sim = SimStorage::new();
    let dir = std::path::Path::new("/store");
    let lane = dir.join("lanes").join("30d");
    let seg = lane.join("00000000000000000001.seg");
    if sim.create_dir_all(&lane).is_err()
        || sim
            .open(&seg, OpenMode::CreateNew)
            .and_then(|f| f.append(data))
            .is_err()
    {
        return;
    }
    let config = replaystore::Config::default()
        .with_background_flush(false)
        .with_maintenance_interval(None)
        .with_default_retention_days(3650)
        .with_storage(std::sync::Arc::new(sim));
    let Ok(store) = replaystore::Store::open(dir, config) else {
        return;
    };
    let _ = store.stats();
    for team in [0, 1, 2] {
        if let Ok(list) = store.list_sessions(team, &replaystore::SessionFilter::default()) {
            for s in list.iter().take(16) {
                let _ = store.read_session(team, &s.session_id);
            }
        }
    }
    let _ = store.compact();
}

/// The PostHog wire parser used by `ingest`: gzip detection, JSON arrays and lines, events.
pub fn posthog(data: &[u8]) {
    if let Ok(text) = replaystore_posthog::posthog::decode_body(data) {
        for (_, r) in replaystore_posthog::posthog::parse_body(1, &text) {
            if let Ok(Some(c)) = r {
                let _ = c.validate(16 << 20);
                let _ = replaystore_posthog::posthog::payload_events(&c.payload);
            }
        }
    }
}
