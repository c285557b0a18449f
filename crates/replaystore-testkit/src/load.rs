//! `replaystore load` (hidden): a bounded load test of `replaystore serve` on loopback. Starts
//! the server (a child process), replays posthog-js request bodies from many concurrent
//! kept-alive connections, and reports requests/s, MB/s, p50/p99 latency of the durable 200 and fsyncs per
//! second; then measures, in the same run, the engine's own ingest rate on the same chunks with
//! the same durability points, and prints the ratio.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use replaystore::{Chunk, Error, Result, Store};

fn io(context: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        context: context.into(),
        source: e,
    }
}

/// One POST on a kept-alive connection (browsers keep theirs open too); returns the status.
fn post(conn: &mut BufReader<TcpStream>, addr: &str, body: &[u8]) -> std::io::Result<u16> {
    let head = format!(
        "POST /s/ HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // One write: header and body apart would meet Nagle's algorithm and delayed ACKs.
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    conn.get_mut().write_all(&request)?;
    let mut status_line = String::new();
    conn.read_line(&mut status_line)?;
    let status = status_line
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad response"))?;
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body)?;
    Ok(status)
}

// Long on purpose: a load-test script: setup, run, and the printed figures, in order.
#[allow(clippy::too_many_lines)]
pub fn run(bodies_dir: &Path, connections: usize, rounds: usize) -> Result<i32> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(bodies_dir)
        .map_err(io("read bodies"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let bodies: Vec<Vec<u8>> = files
        .iter()
        .map(std::fs::read)
        .collect::<std::io::Result<_>>()
        .map_err(io("read body"))?;
    let token = "phc_realclient_harness_token";
    // Each connection sends every body `rounds` times, its session ids made its own so that
    // sessions do not all pile into one.
    let per_conn: Vec<Vec<Vec<u8>>> = (0..connections)
        .map(|c| {
            bodies
                .iter()
                .map(|b| {
                    let json = replaystore_posthog::posthog::decode_body(b)
                        .map(|j| j.into_owned())
                        .unwrap_or_default();
                    let text = String::from_utf8_lossy(&json)
                        .replace("\"$session_id\":\"", &format!("\"$session_id\":\"c{c}-"));
                    let mut gz =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    let _ = gz.write_all(text.as_bytes());
                    gz.finish().unwrap_or_default()
                })
                .collect()
        })
        .collect();
    let dir = tempfile::tempdir().map_err(io("temp dir"))?;
    let mut child = Command::new(std::env::current_exe().map_err(io("current exe"))?)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--retention-days",
            "3650",
            "--token",
        ])
        .arg(format!("{token}=1"))
        .arg("--dir")
        .arg(dir.path().join("server"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io("start server"))?;
    let mut line = String::new();
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::FlushFailed("no server stdout".into()))?;
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(io("server address"))?;
    let addr = line
        .trim()
        .trim_start_matches("listening on http://")
        .to_string();

    let bytes: usize = per_conn.iter().flatten().map(Vec::len).sum::<usize>() * rounds;
    let started = Instant::now();
    let results: Vec<std::io::Result<Vec<f64>>> = std::thread::scope(|s| {
        let hs: Vec<_> = per_conn
            .iter()
            .map(|mine| {
                let addr = &addr;
                s.spawn(move || -> std::io::Result<Vec<f64>> {
                    let mut lat = Vec::new();
                    let stream = TcpStream::connect(addr)?;
                    stream.set_nodelay(true)?;
                    let mut conn = BufReader::new(stream);
                    for _ in 0..rounds {
                        for b in mine {
                            let t = Instant::now();
                            let status = post(&mut conn, addr, b)?;
                            if status != 200 {
                                return Err(std::io::Error::other(format!("status {status}")));
                            }
                            lat.push(t.elapsed().as_secs_f64() * 1e3);
                        }
                    }
                    Ok(lat)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("panic")))
            })
            .collect()
    });
    let took = started.elapsed().as_secs_f64();
    let metrics = {
        let mut s = TcpStream::connect(&addr).map_err(io("metrics"))?;
        s.write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .map_err(io("metrics"))?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(io("metrics"))?;
        out
    };
    let _ = child.kill();
    let _ = child.wait();
    let mut lat: Vec<f64> = Vec::new();
    for r in results {
        lat.extend(r.map_err(io("load"))?);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let fsyncs: f64 = metrics
        .lines()
        .find(|l| l.starts_with("replaystore_fsyncs_total"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0.0);
    let raw: usize = per_conn
        .iter()
        .flatten()
        .map(|b| {
            replaystore_posthog::posthog::decode_body(b)
                .map(|j| j.len())
                .unwrap_or(0)
        })
        .sum::<usize>()
        * rounds;
    let server_mb_s = raw as f64 / 1e6 / took;
    println!(
        "server: {} requests from {connections} connections in {took:.2} s",
        lat.len()
    );
    println!(
        "  {:.0} requests/s, {:.1} MB/s of bodies as sent ({:.1} MB/s decoded JSON)",
        lat.len() as f64 / took,
        bytes as f64 / 1e6 / took,
        server_mb_s
    );
    println!(
        "  durable 200: p50 {:.2} ms, p99 {:.2} ms",
        lat[lat.len() / 2],
        lat[(lat.len() * 99) / 100]
    );
    println!("  {fsyncs:.0} fsyncs, {:.0} per second", fsyncs / took);

    // The engine alone, same chunks, a durable flush per request, from as many threads.
    let chunks: Vec<Vec<Vec<Chunk>>> = per_conn
        .iter()
        .map(|mine| {
            mine.iter()
                .map(|b| {
                    let json = replaystore_posthog::posthog::decode_body(b)
                        .map(|j| j.into_owned())
                        .unwrap_or_default();
                    replaystore_posthog::posthog::parse_body(1, &json)
                        .into_iter()
                        .filter_map(|(_, r)| r.ok().flatten())
                        .collect()
                })
                .collect()
        })
        .collect();
    let store = Store::open(
        dir.path().join("engine"),
        replaystore_posthog::configure(replaystore::Config::default())
            .with_default_retention_days(3650),
    )?;
    let started = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let hs: Vec<_> = chunks
            .iter()
            .map(|mine| {
                let store = &store;
                s.spawn(move || -> Result<()> {
                    for _ in 0..rounds {
                        for request in mine {
                            for c in request {
                                store.append(c.clone())?;
                            }
                            store.flush()?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join().map_err(|_| Error::FlushFailed("panic".into()))??;
        }
        Ok(())
    })?;
    let engine_took = started.elapsed().as_secs_f64();
    let engine_mb_s = raw as f64 / 1e6 / engine_took;
    println!("engine alone, same chunks and durability points: {engine_mb_s:.1} MB/s decoded JSON");
    println!("server / engine: {:.2}", server_mb_s / engine_mb_s);
    Ok(0)
}
