//! Prometheus text metrics of the ingestion server.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the flush latency histogram.
const BUCKETS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub bytes_in: AtomicU64,
    pub chunks: AtomicU64,
    pub rejected_unauthorized: AtomicU64,
    pub rejected_bad_request: AtomicU64,
    pub rejected_too_large: AtomicU64,
    pub rejected_overloaded: AtomicU64,
    /// 503s for the memory budget of requests in flight.
    pub rejected_over_budget: AtomicU64,
    pub chunks_refused_deleted: AtomicU64,
    /// Chunks refused for a client time that is not a time (the request refused whole).
    pub chunks_refused_timestamp_invalid: AtomicU64,
    /// Chunks the store refused as before its window (`Config::max_ts_behind`).
    chunks_refused_timestamp_too_old: AtomicU64,
    /// Chunks the store refused as after its window (`Config::max_ts_ahead`).
    chunks_refused_timestamp_too_new: AtomicU64,
    flush_buckets: [AtomicU64; 10],
    flush_count: AtomicU64,
    flush_sum_us: AtomicU64,
}

impl Metrics {
    pub fn observe_flush(&self, seconds: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                self.flush_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.flush_count.fetch_add(1, Ordering::Relaxed);
        self.flush_sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Counts a chunk the store refused with `Error::Timestamp`, by side of the window.
    pub fn count_timestamp_refusal(&self, e: &replaystore::Error) {
        if let replaystore::Error::Timestamp {
            value_ms,
            arrival_ms,
            ..
        } = e
        {
            let c = if value_ms < arrival_ms {
                &self.chunks_refused_timestamp_too_old
            } else {
                &self.chunks_refused_timestamp_too_new
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn render(&self, stats: &replaystore::Stats, bytes_in_flight: usize) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        };
        counter(
            "replaystore_requests_total",
            "Recording requests received.",
            g(&self.requests),
        );
        counter(
            "replaystore_bytes_in_total",
            "Request body bytes received.",
            g(&self.bytes_in),
        );
        counter(
            "replaystore_chunks_total",
            "Chunks stored durably.",
            g(&self.chunks),
        );
        counter(
            "replaystore_fsyncs_total",
            "fsyncs of segment data.",
            stats.fsyncs,
        );
        counter(
            "replaystore_chunks_clock_corrected_total",
            "Chunks whose timestamps the store shifted by their client's clock skew (from the send time).",
            stats.chunks_clock_corrected,
        );
        counter(
            "replaystore_chunks_refused_deleted_total",
            "Chunks of deleted persons or sessions dropped.",
            g(&self.chunks_refused_deleted),
        );
        out.push_str("# HELP replaystore_chunks_refused_timestamp_total Chunks refused for their client times: not a time (invalid), or outside the store's window around arrival after skew correction (too_old, too_new).\n# TYPE replaystore_chunks_refused_timestamp_total counter\n");
        for (reason, v) in [
            ("invalid", &self.chunks_refused_timestamp_invalid),
            ("too_old", &self.chunks_refused_timestamp_too_old),
            ("too_new", &self.chunks_refused_timestamp_too_new),
        ] {
            out.push_str(&format!(
                "replaystore_chunks_refused_timestamp_total{{reason=\"{reason}\"}} {}\n",
                g(v)
            ));
        }
        out.push_str(&format!(
            "# HELP replaystore_request_bytes_in_flight Bytes held by requests in flight (the memory budget's use).\n# TYPE replaystore_request_bytes_in_flight gauge\nreplaystore_request_bytes_in_flight {bytes_in_flight}\n"
        ));
        out.push_str("# HELP replaystore_rejected_total Requests refused, by reason.\n# TYPE replaystore_rejected_total counter\n");
        for (reason, v) in [
            ("unauthorized", &self.rejected_unauthorized),
            ("bad_request", &self.rejected_bad_request),
            ("too_large", &self.rejected_too_large),
            ("overloaded", &self.rejected_overloaded),
            ("memory_budget", &self.rejected_over_budget),
        ] {
            out.push_str(&format!(
                "replaystore_rejected_total{{reason=\"{reason}\"}} {}\n",
                g(v)
            ));
        }
        out.push_str("# HELP replaystore_flush_seconds Time for a request's chunks to become durable.\n# TYPE replaystore_flush_seconds histogram\n");
        for (i, b) in BUCKETS.iter().enumerate() {
            out.push_str(&format!(
                "replaystore_flush_seconds_bucket{{le=\"{b}\"}} {}\n",
                g(&self.flush_buckets[i])
            ));
        }
        out.push_str(&format!(
            "replaystore_flush_seconds_bucket{{le=\"+Inf\"}} {}\n",
            g(&self.flush_count)
        ));
        out.push_str(&format!(
            "replaystore_flush_seconds_sum {}\n",
            g(&self.flush_sum_us) as f64 / 1e6
        ));
        out.push_str(&format!(
            "replaystore_flush_seconds_count {}\n",
            g(&self.flush_count)
        ));
        out
    }
}
