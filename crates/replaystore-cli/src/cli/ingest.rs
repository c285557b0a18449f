//! `replaystore ingest`: PostHog request bodies from files or stdin into a store.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use replaystore::{Error, Result, Store};
use replaystore_posthog::posthog::{decode_body, parse_body, MAX_DECODED_BODY};

// Long on purpose: one pass over the input files, reading, parsing and reporting per line.
#[allow(clippy::too_many_lines)]
pub fn run(store: &Store, team: u64, files: &[PathBuf]) -> Result<i32> {
    let stdin = PathBuf::from("-");
    let inputs: Vec<&PathBuf> = if files.is_empty() {
        vec![&stdin]
    } else {
        files.iter().collect()
    };
    let bar = ProgressBar::new(inputs.len() as u64);
    if std::io::stderr().is_terminal() && inputs.len() > 1 {
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} files {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let (mut chunks, mut skipped, mut errors, mut raw, mut refused) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for path in inputs {
        let name = path.display().to_string();
        let text = match read_input(path).and_then(|b| {
            decode_body(&b)
                .map(|t| t.into_owned())
                .map_err(std::io::Error::other)
        }) {
            Ok(t) => t,
            Err(e) => {
                bar.suspend(|| eprintln!("{name}: {e}"));
                errors += 1;
                bar.inc(1);
                continue;
            }
        };
        for (line, parsed) in parse_body(team, &text) {
            let outcome = match parsed {
                Ok(None) => {
                    skipped += 1;
                    continue;
                }
                Ok(Some(mut chunk)) => {
                    // An import: the send time is the original upload's, not a skew to correct.
                    chunk.sent_at_ms = None;
                    let n = chunk.payload.len() as u64;
                    store.append(chunk).map(|_| n)
                }
                Err(e) => Err(Error::InvalidChunk {
                    field: "event",
                    reason: e.to_string(),
                }),
            };
            match outcome {
                Ok(n) => {
                    chunks += 1;
                    raw += n;
                }
                Err(Error::Deleted { reason }) => {
                    bar.suspend(|| eprintln!("{name}:{line}: dropped, {reason}"));
                    refused += 1;
                }
                // Not stored: a malformed event, or a client time the store cannot trust.
                Err(e @ (Error::InvalidChunk { .. } | Error::Timestamp { .. })) => {
                    bar.suspend(|| eprintln!("{name}:{line}: {e}"));
                    errors += 1;
                }
                Err(e) => return Err(e),
            }
        }
        bar.inc(1);
        bar.set_message(format!("{chunks} chunks"));
    }
    store.flush()?;
    bar.finish_and_clear();
    eprintln!(
        "ingested {chunks} chunks ({:.2} MB raw), skipped {skipped} non-snapshot events, refused {refused} of deleted persons or sessions, {errors} errors",
        raw as f64 / 1e6
    );
    Ok(if errors > 0 { 1 } else { 0 })
}

/// Reads one input whole, refusing one larger than `MAX_DECODED_BODY` (split such exports).
fn read_input(path: &Path) -> std::io::Result<Vec<u8>> {
    let limit = MAX_DECODED_BODY as u64 + 1;
    let mut buf = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut buf)?;
    } else {
        std::fs::File::open(path)?
            .take(limit)
            .read_to_end(&mut buf)?;
    }
    if buf.len() as u64 == limit {
        return Err(std::io::Error::other(format!(
            "input larger than {MAX_DECODED_BODY} bytes; split it into smaller files"
        )));
    }
    Ok(buf)
}
