//! `replaystore ingest`: PostHog request bodies from files or stdin into a store, streamed.
//!
//! Three stages joined by bounded channels, so memory stays a few MiB of batches plus the
//! store's write buffer whatever the input's size:
//! - the reader (one thread, `input`) reads each input in turn, gunzipping as it goes, and cuts
//!   it into batches of whole lines;
//! - `threads` decoders parse batches into chunks, in parallel;
//! - the appender (the calling thread) appends each batch's chunks in input order and reports
//!   each problem as `file:line: reason`. One appender in input order keeps what the store
//!   sees exactly what a sequential import gives: chunks of a session with equal timestamps
//!   play back in file order (append order breaks ties). Appending is cheap; the flush
//!   pipeline compresses on its own threads.
//!
//! The order is kept by a ticket per batch: the reader queues each batch's reply channel on
//! `order` (bounded: at most that many batches in flight) before handing the batch to a
//! decoder, and the appender waits on the tickets in turn.

mod input;

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use replaystore::{Chunk, Error, Result, Store};
use replaystore_posthog::jsonscan;
use replaystore_posthog::posthog::{
    event_to_chunk, for_each_event, parse_body, WireError, MAX_DECODED_BODY,
};

use input::{Batch, InputEnd, Limits, Piece};

/// The store's write buffer during an import: a flush round starts at this many bytes (and
/// `append` flushes itself at twice as many). Small rounds keep the peak memory low (124 MB RSS
/// for a 2 GB input, against 420 MB with the 64 MiB default) and were also the fastest
/// measured (8 / 16 / 32 / 64 MiB: 299 / 282 / 277 / 241 MB/s, docs/benchmarks.md).
pub const BUFFER_BYTES: usize = 8 << 20;

/// How `ingest` runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Decoder threads (at least 1).
    pub threads: usize,
    /// Longest input line kept; a longer one is reported and skipped.
    pub max_line_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_line_bytes: MAX_DECODED_BODY,
        }
    }
}

/// A batch handed to a decoder, and where its chunks go.
struct Job {
    batch: Batch,
    reply: SyncSender<Decoded>,
}

/// A decoded batch: per input line, its chunks (`None`: a non-snapshot event) or why not.
struct Decoded {
    name: Arc<str>,
    items: Vec<(usize, std::result::Result<Option<Chunk>, WireError>)>,
    end: Option<InputEnd>,
}

pub fn run(store: &Store, team: u64, files: &[PathBuf], opts: Options) -> Result<i32> {
    let inputs: Vec<PathBuf> = match files.is_empty() {
        true => vec![PathBuf::from("-")],
        false => files.to_vec(),
    };
    let threads = opts.threads.max(1);
    let limits = Limits {
        max_line: opts.max_line_bytes,
        max_body: MAX_DECODED_BODY,
    };
    let started = Instant::now();
    let mut appender = Appender::new(store, inputs.len());
    let (work_tx, work_rx) = sync_channel::<Job>(threads * 2);
    let (order_tx, order_rx) = sync_channel::<Receiver<Decoded>>(threads * 4);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let result = std::thread::scope(|s| {
        for _ in 0..threads {
            let work_rx = work_rx.clone();
            s.spawn(move || decode_loop(team, opts.max_line_bytes, &work_rx));
        }
        s.spawn(move || {
            let mut send = |batch: Batch| {
                let (reply, ticket) = sync_channel(1);
                order_tx.send(ticket).is_ok() && work_tx.send(Job { batch, reply }).is_ok()
            };
            for path in &inputs {
                if !input::read_input(path, limits, &mut send) {
                    return;
                }
            }
        });
        // Returning drops `order_rx`: on an error the reader's next send fails, it stops and
        // drops the work queue, and the decoders end.
        appender.drain(order_rx)
    });
    result?;
    store.flush()?;
    Ok(appender.finish(started))
}

/// A decoder thread: batches until the reader is done.
fn decode_loop(team: u64, max_line: usize, work: &Mutex<Receiver<Job>>) {
    loop {
        let job = work.lock().recv();
        let Ok(Job { batch, reply }) = job else {
            return;
        };
        // The appender may have stopped (a store error): nothing to do about it here.
        let _ = reply.send(decode(team, max_line, batch));
    }
}

/// Parses a batch's pieces into chunks, each with its line, the way `parse_body` does.
fn decode(team: u64, max_line: usize, batch: Batch) -> Decoded {
    let mut items = Vec::new();
    for piece in &batch.pieces {
        match piece {
            Piece::Line { no, range } => {
                let line = batch.text[range.clone()].trim_ascii();
                if let Some(events) = split_events(line) {
                    items.extend(events.into_iter().map(|e| (*no, event_to_chunk(team, e))));
                    continue;
                }
                let read = for_each_event(line, &mut |e| {
                    items.push((*no, event_to_chunk(team, e.get())));
                    Ok(())
                });
                if let Err(e) = read {
                    items.push((*no, Err(e)));
                }
            }
            Piece::Whole { no, range } => items.extend(
                parse_body(team, &batch.text[range.clone()])
                    .into_iter()
                    .map(|(line, r)| (line + no - 1, r)),
            ),
            Piece::TooLong { no, bytes } => items.push((
                *no,
                Err(WireError::TooLarge(format!(
                    "line of {bytes} bytes is longer than {max_line}; skipped"
                ))),
            )),
        }
    }
    for (_, item) in &mut items {
        if let Ok(Some(chunk)) = item {
            // An import: the send time is the original upload's, not a skew to correct.
            chunk.sent_at_ms = None;
        }
    }
    Decoded {
        name: batch.name,
        items,
        end: batch.end,
    }
}

#[cfg(test)]
mod tests {
    use super::split_events;

    #[test]
    fn json_lines_split_into_events_and_other_shapes_go_to_the_parser() {
        let ev = r#"{"a":"x]\"},","b":[1,{"c":2}]}"#;
        let line = format!("[ {ev} ,{ev}]");
        assert_eq!(split_events(line.as_bytes()), Some(vec![ev, ev]));
        assert_eq!(split_events(ev.as_bytes()), Some(vec![ev]));
        assert_eq!(split_events(b"[ ]"), Some(vec![]));
        // Not an array's syntax: the validating parser reports it.
        for bad in ["[{} {}]", "[{},]", "[{}", "[,{}]", "3", "[{}]]", "[{}]x"] {
            assert_eq!(split_events(bad.as_bytes()), None, "{bad}");
        }
    }
}

/// The events of one JSON line (an array of events, or one event) as text, found with the
/// scanner, which steps over the SDK's escaped gzip strings several times faster than a
/// validating parse: each event is then parsed, and so validated, by `event_to_chunk`, and the
/// array's own syntax is checked here, so this accepts what `for_each_event` accepts with one
/// full parse instead of two. `None` for any other shape (or text that is not UTF-8): the
/// caller then takes `for_each_event`, which names the error.
fn split_events(line: &[u8]) -> Option<Vec<&str>> {
    let text = std::str::from_utf8(line).ok()?;
    match line.first() {
        Some(b'{') => return Some(vec![text]),
        Some(b'[') => {}
        _ => return None,
    }
    let skip_ws = |i: usize| {
        let n = line.get(i..).unwrap_or_default();
        i + n
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
            .count()
    };
    let mut events = Vec::new();
    let mut i = skip_ws(1);
    if line.get(i) == Some(&b']') {
        return (i + 1 == line.len()).then_some(events);
    }
    loop {
        let end = jsonscan::skip_value(line, i).filter(|&end| end > i)?;
        events.push(text.get(i..end)?);
        i = skip_ws(end);
        match line.get(i)? {
            b',' => i = skip_ws(i + 1),
            b']' if i + 1 == line.len() => return Some(events),
            _ => return None,
        }
    }
}

/// The appending stage: the store, the counts it reports, the progress bar.
struct Appender<'s> {
    store: &'s Store,
    bar: ProgressBar,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    chunks: u64,
    raw: u64,
    skipped: u64,
    refused: u64,
    /// Lines over the length limit (also counted in `errors`).
    too_long: u64,
    errors: u64,
}

impl<'s> Appender<'s> {
    fn new(store: &'s Store, inputs: usize) -> Self {
        let bar = ProgressBar::new(inputs as u64);
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) && inputs > 1 {
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} files {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
        } else {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        Appender {
            store,
            bar,
            counts: Counts::default(),
        }
    }

    /// Appends decoded batches in input order until the reader is done; stops at the first
    /// error of the store itself (a problem of the input is reported and counted instead).
    fn drain(&mut self, order: Receiver<Receiver<Decoded>>) -> Result<()> {
        for ticket in order {
            let decoded = ticket.recv().map_err(|_| Error::Io {
                context: "ingest".into(),
                source: std::io::Error::other("a decoder thread failed"),
            })?;
            self.apply(decoded)?;
        }
        Ok(())
    }

    fn apply(&mut self, d: Decoded) -> Result<()> {
        let c = &mut self.counts;
        for (line, item) in d.items {
            let name = &d.name;
            let outcome = match item {
                Ok(None) => {
                    c.skipped += 1;
                    continue;
                }
                Ok(Some(chunk)) => {
                    let n = chunk.payload.len() as u64;
                    self.store.append(chunk).map(|_| n)
                }
                Err(e @ WireError::TooLarge(_)) => {
                    self.bar.suspend(|| eprintln!("{name}:{line}: {e}"));
                    c.too_long += 1;
                    c.errors += 1;
                    continue;
                }
                Err(e) => Err(Error::InvalidChunk {
                    field: "event",
                    reason: e.to_string(),
                }),
            };
            match outcome {
                Ok(n) => {
                    c.chunks += 1;
                    c.raw += n;
                }
                Err(Error::Deleted { reason }) => {
                    self.bar
                        .suspend(|| eprintln!("{name}:{line}: dropped, {reason}"));
                    c.refused += 1;
                }
                // Not stored: a malformed event, or a client time the store cannot trust.
                Err(e @ (Error::InvalidChunk { .. } | Error::Timestamp { .. })) => {
                    self.bar.suspend(|| eprintln!("{name}:{line}: {e}"));
                    c.errors += 1;
                }
                Err(e) => return Err(e),
            }
        }
        match d.end {
            None => {}
            Some(end) => {
                if let InputEnd::Failed(why) = end {
                    self.bar.suspend(|| eprintln!("{}: {why}", d.name));
                    c.errors += 1;
                }
                self.bar.inc(1);
                self.bar.set_message(format!("{} chunks", c.chunks));
            }
        }
        Ok(())
    }

    /// Prints the summary; returns the exit code (1 if anything was not stored for an error).
    fn finish(self, started: Instant) -> i32 {
        self.bar.finish_and_clear();
        let c = &self.counts;
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "ingested {} chunks ({:.2} MB raw) in {secs:.2} s ({:.1} MB/s), skipped {} non-snapshot events, refused {} of deleted persons or sessions, {} errors ({} lines too long)",
            c.chunks,
            crate::cli::mb(c.raw),
            crate::cli::mb(c.raw) / secs.max(1e-9),
            c.skipped,
            c.refused,
            c.errors,
            c.too_long,
        );
        i32::from(c.errors > 0)
    }
}
