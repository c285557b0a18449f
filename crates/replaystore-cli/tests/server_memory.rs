//! The server's memory under hostile clients: `--max-inflight` concurrent worst-case bodies
//! (gzip and lz64 bombs at the decoded cap, maximum-size bodies of many events, a huge
//! `distinct_id`, deep nesting), and the server's peak RSS (VmHWM) read from /proc.
//!
//! The full-scale measurement (defaults: 256 in flight, 20 MiB bodies) is `#[ignore]`d:
//! `cargo test --release --test server_memory -- --ignored --nocapture`. Knobs (environment):
//! `MEMTEST_BIN` (the server binary, e.g. an older build), `MEMTEST_CONCURRENCY`,
//! `MEMTEST_BODY_BYTES`, `MEMTEST_DECODED_BYTES` (what the bombs inflate to), `MEMTEST_KINDS`
//! (comma-separated subset of the body kinds).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};

use common::server::{Server, TOKEN};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// POST that tolerates the server answering (and closing) before the body is all sent.
/// Returns the status, or 0 if the connection broke without an answer.
fn post(addr: &str, path: &str, body: &[u8]) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return 0;
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(body));
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    std::str::from_utf8(resp.get(9..12).unwrap_or(b"000"))
        .unwrap_or("0")
        .parse()
        .unwrap_or(0)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn snapshot_event(i: usize, token: &str, ts: i64) -> String {
    format!(
        r#"{{"event":"$snapshot","properties":{{"$session_id":"s{i}","distinct_id":"p","token":"{token}","$snapshot_data":[{{"type":3,"data":{{"source":1,"positions":[{{"x":{i},"y":7}}]}},"timestamp":{}}}]}}}}"#,
        ts + i as i64
    )
}

/// The worst-case bodies, by name: each is refused (nothing stored) after as much work as
/// the server does for it.
fn bodies(body_bytes: usize, decoded: usize) -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    // Inflates to `decoded` bytes of JSON whitespace.
    out.push(("gzip_bomb", "/s/".into(), gzip(&vec![b' '; decoded])));
    // Many small valid events (timed now), and a last one without a session id.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut many = String::from("[");
    let mut i = 0;
    while many.len() + 400 < body_bytes {
        many.push_str(&snapshot_event(i, TOKEN, now));
        many.push(',');
        i += 1;
    }
    // The same, all valid: stored (the store's write path under the burst).
    let stored = format!("{}]", many.trim_end_matches(','));
    out.push(("stored_events", "/s/".into(), stored.into_bytes()));
    many.push_str(r#"{"event":"$snapshot","properties":{}}]"#);
    out.push(("many_events", "/s/".into(), many.into_bytes()));
    // One event whose distinct_id is a huge array (a JSON value tree if parsed as one).
    let zeros = "0,".repeat(body_bytes / 2 - 100);
    let big_id = format!(
        r#"[{{"event":"$snapshot","distinct_id":[{zeros}0],"properties":{{"$session_id":"s"}}}}]"#
    );
    out.push(("huge_distinct_id", "/s/".into(), big_id.into_bytes()));
    // Millions of empty elements.
    let empties = format!("[{}{{}}]", "{},".repeat(body_bytes / 3 - 1));
    out.push(("empty_elements", "/s/".into(), empties.into_bytes()));
    // lz-string of a long run of one character: its dictionary grows quadratically.
    let lz = lz64_run(decoded);
    out.push((
        "lz64_bomb",
        "/s/?compression=lz64".into(),
        format!(
            "data={}",
            lz.replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D")
        )
        .into_bytes(),
    ));
    // Nesting deeper than any parser should follow.
    let deep = format!(
        "{}{}",
        "[".repeat(body_bytes / 2),
        "]".repeat(body_bytes / 2)
    );
    out.push(("deep_nesting", "/s/".into(), deep.into_bytes()));
    if let Ok(kinds) = std::env::var("MEMTEST_KINDS") {
        out.retain(|(k, _, _)| kinds.split(',').any(|w| w == *k));
    }
    out
}

/// lz-string (base64 form) of a run of `n` or a few more 'a's, written directly: code k
/// repeats the previous entry plus one 'a', so k codes (~k * log2(k) bits) inflate to
/// ~k^2 / 2 characters.
fn lz64_run(n: usize) -> String {
    const KEY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";
    let mut bits: Vec<bool> = Vec::new();
    let put = |v: u32, width: u32, bits: &mut Vec<bool>| {
        for i in 0..width {
            bits.push(v >> i & 1 == 1);
        }
    };
    put(0, 2, &mut bits); // an 8-bit literal follows
    put(u32::from(b'a'), 8, &mut bits);
    let (mut num_bits, mut enlarge_in, mut dict_len, mut w_len) = (3u32, 4u64, 4u32, 1usize);
    let mut out_len = 1;
    while out_len < n {
        put(dict_len, num_bits, &mut bits);
        w_len += 1;
        out_len += w_len;
        dict_len += 1;
        enlarge_in -= 1;
        if enlarge_in == 0 {
            enlarge_in = 1 << num_bits;
            num_bits += 1;
        }
    }
    put(2, num_bits, &mut bits); // close
    bits.extend([false; 12]);
    bits.chunks(6)
        .map(|c| {
            let v = c.iter().fold(0usize, |acc, &b| acc << 1 | usize::from(b));
            KEY[v << (6 - c.len())] as char
        })
        .collect()
}

#[test]
fn the_lz64_bomb_is_what_it_claims() {
    let run = lz_str::decompress_from_base64(&lz64_run(100_000)).expect("valid lz64");
    assert!(run.len() >= 100_000 && run.len() < 101_000, "{}", run.len());
    assert!(run.iter().all(|&c| c == u16::from(b'a')));
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Sends `concurrency` requests at once, cycling over the body kinds; returns the server's
/// peak RSS (KiB) and the statuses by kind.
fn burst(
    extra: &[String],
    concurrency: usize,
    body_bytes: usize,
    decoded: usize,
) -> (u64, BTreeMap<String, BTreeMap<u16, usize>>) {
    let dir = tempfile::tempdir().unwrap();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut server = Server::start(dir.path(), &extra);
    let (pid, addr) = (server.child.id(), server.addr.clone());
    let idle = vm_hwm_kib(pid).unwrap_or(0);
    let bodies = Arc::new(bodies(body_bytes, decoded));
    let barrier = Arc::new(Barrier::new(concurrency));
    // VmHWM is a high-water mark; sampled too in case the server dies (out of memory).
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let done = done.clone();
        move || {
            let mut max = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                max = max.max(vm_hwm_kib(pid).unwrap_or(0));
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            max
        }
    });
    let threads: Vec<_> = (0..concurrency)
        .map(|i| {
            let (bodies, barrier, addr) = (bodies.clone(), barrier.clone(), addr.clone());
            std::thread::spawn(move || {
                let (kind, path, body) = &bodies[i % bodies.len()];
                barrier.wait();
                (kind.to_string(), post(&addr, path, body))
            })
        })
        .collect();
    let mut statuses: BTreeMap<String, BTreeMap<u16, usize>> = BTreeMap::new();
    for t in threads {
        let (kind, status) = t.join().unwrap();
        *statuses.entry(kind).or_default().entry(status).or_default() += 1;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let alive = server.child.try_wait().ok().flatten().is_none();
    let peak = vm_hwm_kib(pid).unwrap_or(0).max(sampler.join().unwrap());
    if !alive {
        eprintln!("the server died during the burst");
    }
    drop(server); // killed
    eprintln!(
        "server idle RSS {} MiB, peak {} MiB",
        idle / 1024,
        peak / 1024
    );
    (peak, statuses)
}

/// At a small scale (CI): 64 hostile requests at once against a 32 MiB budget. Without the
/// budget, the bounded decoders and the fixed mmap threshold, this peaked past 1 GiB.
#[test]
fn a_burst_of_hostile_requests_stays_within_the_budget() {
    let mib = |n: usize| (n << 20).to_string();
    let extra = [
        "--max-body-bytes".to_string(),
        mib(4),
        "--max-decoded-bytes".into(),
        mib(8),
        "--memory-budget-bytes".into(),
        mib(32),
        "--max-inflight".into(),
        "64".into(),
    ];
    let (peak, statuses) = burst(&extra, 64, 4 << 20, 16 << 20);
    for (kind, by_status) in &statuses {
        // Every request got an answer: refused (400, 413) or asked to retry (503); the
        // empty elements are no `$snapshot` events, a request with nothing to store (200).
        let ok = [200, 400, 413, 503];
        assert!(
            by_status.keys().all(|s| ok.contains(s)),
            "{kind}: {by_status:?}"
        );
    }
    assert!(peak < 112 << 10, "peak RSS {} MiB", peak / 1024);
}

/// The full-scale measurement at the defaults (see the module docs).
#[test]
#[ignore]
fn peak_rss_at_max_inflight_and_max_body() {
    let concurrency = env_or("MEMTEST_CONCURRENCY", 256);
    let body_bytes = env_or("MEMTEST_BODY_BYTES", 20 << 20);
    let decoded = env_or("MEMTEST_DECODED_BYTES", 64 << 20);
    let (peak, statuses) = burst(&[], concurrency, body_bytes, decoded);
    eprintln!("{concurrency} requests of up to {body_bytes} bytes, bombs inflating to {decoded}");
    for (kind, by_status) in &statuses {
        eprintln!("  {kind}: {by_status:?}");
    }
    eprintln!("peak RSS {} MiB", peak / 1024);
    assert!(peak < 256 << 10, "peak RSS {} MiB", peak / 1024);
}
