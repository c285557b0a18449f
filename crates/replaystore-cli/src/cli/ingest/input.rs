//! The reading side of `ingest`: one input at a time, gunzipped as it is read, cut into
//! batches of whole lines for the decoders. What it holds is bounded by the batch size and the
//! longest line: a line longer than `Limits::max_line` is skipped as it is read (never
//! buffered) and handed on as `Piece::TooLong`, so one bad line costs nothing but its report.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use flate2::bufread::MultiGzDecoder;

/// Read buffer of an input (and of its gunzipped stream).
const READ_BUF: usize = 1 << 20;
/// A batch goes to the decoders once it holds this many bytes of lines: large enough that
/// hand-offs cost nothing beside parsing, small enough that the batches in flight stay a few
/// MiB.
const BATCH_BYTES: usize = 1 << 20;

/// The reader's bounds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Longest line kept (`MAX_DECODED_BODY` unless a test sets it lower).
    pub max_line: usize,
    /// Largest whole body spread over several lines (a pretty-printed JSON array).
    pub max_body: usize,
}

/// A run of one input's lines, in input order, for one decoder.
pub(super) struct Batch {
    /// The input's name, for messages.
    pub name: Arc<str>,
    /// The pieces' bytes, back to back.
    pub text: Vec<u8>,
    pub pieces: Vec<Piece>,
    /// On the input's last batch: how reading it ended.
    pub end: Option<InputEnd>,
}

/// One unit of input for a decoder. Line numbers are 1-based.
pub(super) enum Piece {
    /// One JSON line (an array of events or one event): `text[range]`.
    Line { no: usize, range: Range<usize> },
    /// One JSON value spread over several lines, starting at line `no`.
    Whole { no: usize, range: Range<usize> },
    /// A line of `bytes` bytes, over `Limits::max_line`: skipped unread.
    TooLong { no: usize, bytes: u64 },
}

/// How reading an input ended.
pub(super) enum InputEnd {
    Done,
    /// It could not be opened or read on (a gzip stream cut short...): why. Every batch
    /// before this one was handed on, so what was read is still stored.
    Failed(String),
}

/// What `next_line` found.
enum Line {
    /// A line (possibly empty) appended to the output buffer, its newline dropped.
    Text,
    /// A line of this many bytes, over the limit: consumed, nothing appended.
    TooLong(u64),
    End,
}

/// Reads `path` (`-`: stdin) and hands its batches to `send`, the last one with its `end`.
/// Returns false when `send` did (the pipeline stopped: stop reading).
pub(super) fn read_input(path: &Path, limits: Limits, send: &mut dyn FnMut(Batch) -> bool) -> bool {
    let name: Arc<str> = path.display().to_string().into();
    let mut cutter = Cutter {
        batch: Cutter::empty(&name),
        name,
        limits,
        line_no: 0,
        undecided: true,
    };
    let end = match open(path) {
        Ok(mut reader) => match cutter.cut(&mut *reader, send) {
            Ok(true) => InputEnd::Done,
            Ok(false) => return false,
            Err(e) => InputEnd::Failed(e.to_string()),
        },
        Err(e) => InputEnd::Failed(e.to_string()),
    };
    cutter.batch.end = Some(end);
    send(cutter.batch)
}

/// Opens an input: gunzipped as it is read when it starts with the gzip magic bytes.
fn open(path: &Path) -> std::io::Result<Box<dyn BufRead + Send>> {
    let raw: Box<dyn Read + Send> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(File::open(path)?)
    };
    let mut buffered = BufReader::with_capacity(READ_BUF, raw);
    if !buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]) {
        return Ok(Box::new(buffered));
    }
    let gunzip = GzipErrors(MultiGzDecoder::new(buffered));
    Ok(Box::new(BufReader::with_capacity(READ_BUF, gunzip)))
}

/// Names gzip as the culprit of a read error of the gunzipped stream.
struct GzipErrors<R>(R);

impl<R: Read> Read for GzipErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| std::io::Error::new(e.kind(), format!("invalid gzip: {e}")))
    }
}

/// Cuts one input into batches.
struct Cutter {
    name: Arc<str>,
    limits: Limits,
    batch: Batch,
    /// Lines read so far.
    line_no: usize,
    /// No non-blank line seen yet: the first one tells JSON lines from a multi-line body.
    undecided: bool,
}

impl Cutter {
    fn empty(name: &Arc<str>) -> Batch {
        Batch {
            name: name.clone(),
            text: Vec::with_capacity(BATCH_BYTES + (64 << 10)),
            pieces: Vec::new(),
            end: None,
        }
    }

    /// Reads lines to the end of the input, sending full batches; false if `send` refused one.
    fn cut(
        &mut self,
        r: &mut dyn BufRead,
        send: &mut dyn FnMut(Batch) -> bool,
    ) -> std::io::Result<bool> {
        loop {
            let start = self.batch.text.len();
            let line = next_line(r, &mut self.batch.text, self.limits.max_line)?;
            self.line_no += 1;
            let no = self.line_no;
            match line {
                Line::End => return Ok(true),
                Line::TooLong(bytes) => {
                    self.undecided = false;
                    self.batch.pieces.push(Piece::TooLong { no, bytes });
                }
                Line::Text if self.batch.text[start..].trim_ascii().is_empty() => {
                    self.batch.text.truncate(start);
                    continue;
                }
                Line::Text
                    if std::mem::take(&mut self.undecided)
                        && incomplete_json(&self.batch.text[start..]) =>
                {
                    self.whole(r, start)?;
                    return Ok(true);
                }
                Line::Text => {
                    let range = start..self.batch.text.len();
                    self.batch.pieces.push(Piece::Line { no, range });
                }
            }
            if self.batch.text.len() >= BATCH_BYTES {
                let full = std::mem::replace(&mut self.batch, Cutter::empty(&self.name));
                if !send(full) {
                    return Ok(false);
                }
            }
        }
    }

    /// The input is one JSON value over several lines (what `parse_body` reads whole): reads
    /// the rest of it as one piece, at most `max_body` bytes in all, as before streaming.
    fn whole(&mut self, r: &mut dyn BufRead, start: usize) -> std::io::Result<()> {
        let max = self.limits.max_body;
        let text = &mut self.batch.text;
        text.push(b'\n');
        let room = (max + 1).saturating_sub(text.len() - start) as u64;
        r.take(room).read_to_end(text)?;
        if text.len() - start > max {
            text.truncate(start);
            return Err(std::io::Error::other(format!(
                "a multi-line JSON body larger than {max} bytes; write it as JSON lines, or split it"
            )));
        }
        let (no, range) = (self.line_no, start..text.len());
        self.batch.pieces.push(Piece::Whole { no, range });
        Ok(())
    }
}

/// Whether `text` is the start of a JSON value that goes on past it (a pretty-printed body's
/// first line), rather than a whole value or a malformed line.
fn incomplete_json(text: &[u8]) -> bool {
    matches!(serde_json::from_slice::<serde::de::IgnoredAny>(text), Err(e) if e.is_eof())
}

/// Reads one line into `out` (without its newline), unless it is longer than `max` bytes:
/// then the rest of it is read and dropped, and `out` is left as it was.
fn next_line(r: &mut dyn BufRead, out: &mut Vec<u8>, max: usize) -> std::io::Result<Line> {
    let start = out.len();
    let (mut len, mut any) = (0u64, false);
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            break;
        }
        any = true;
        let newline = memchr::memchr(b'\n', buf);
        let take = newline.unwrap_or(buf.len());
        len += take as u64;
        if len <= max as u64 {
            out.extend_from_slice(&buf[..take]);
        } else {
            out.truncate(start);
        }
        r.consume(take + usize::from(newline.is_some()));
        if newline.is_some() {
            break;
        }
    }
    Ok(match (any, len > max as u64) {
        (false, _) => Line::End,
        (true, true) => Line::TooLong(len),
        (true, false) => Line::Text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Result<String, u64>> {
        let mut r = std::io::BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        let mut found = Vec::new();
        loop {
            out.clear();
            match next_line(&mut r, &mut out, max).unwrap() {
                Line::End => return found,
                Line::Text => found.push(Ok(String::from_utf8(out.clone()).unwrap())),
                Line::TooLong(n) => found.push(Err(n)),
            }
        }
    }

    #[test]
    fn lines_over_the_limit_are_skipped_whole_and_the_next_ones_read() {
        let got = lines(b"ab\n0123456789\n\nlast", 5);
        assert_eq!(
            got,
            vec![
                Ok("ab".into()),
                Err(10),
                Ok(String::new()),
                Ok("last".into())
            ]
        );
        assert_eq!(lines(b"", 5), vec![]);
        assert_eq!(lines(b"abcdef", 5), vec![Err(6)]);
    }

    #[test]
    fn an_incomplete_first_line_is_told_from_a_malformed_one() {
        assert!(incomplete_json(b"["));
        assert!(incomplete_json(b"[{\"a\": 1},"));
        assert!(!incomplete_json(b"[1]"));
        assert!(!incomplete_json(b"{not json"));
    }
}
