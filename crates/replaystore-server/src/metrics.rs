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
    pub chunks_refused_deleted: AtomicU64,
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

    pub fn render(&self, fsyncs: u64) -> String {
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
            fsyncs,
        );
        counter(
            "replaystore_chunks_refused_deleted_total",
            "Chunks of deleted persons or sessions dropped.",
            g(&self.chunks_refused_deleted),
        );
        out.push_str("# HELP replaystore_rejected_total Requests refused, by reason.\n# TYPE replaystore_rejected_total counter\n");
        for (reason, v) in [
            ("unauthorized", &self.rejected_unauthorized),
            ("bad_request", &self.rejected_bad_request),
            ("too_large", &self.rejected_too_large),
            ("overloaded", &self.rejected_overloaded),
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
