//! The bound on what requests in flight may hold in memory: one byte budget shared by all of
//! them (bodies as received, decoded text, parsed chunks), on top of the per-request caps.
//! A request that cannot take what it needs is answered 503 with Retry-After, having held no
//! more than it took; what it took is returned when it ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use clap::Args;
use replaystore_posthog::posthog::Allowance;

/// The server's memory bounds (flags of `serve`).
#[derive(Args, Clone, Debug)]
pub struct Limits {
    /// Largest body after decompression (gzip, base64, lz64); larger ones get 413.
    #[arg(long, default_value_t = 32 << 20)]
    pub max_decoded_bytes: usize,
    /// Bytes all requests in flight may hold at once (bodies, decoded text, parsed chunks);
    /// beyond, 503 with Retry-After. At least 3x the larger of --max-body-bytes and
    /// --max-decoded-bytes, so that the largest request fits.
    #[arg(long, default_value_t = 128 << 20)]
    pub memory_budget_bytes: usize,
    /// Events one request may hold (posthog-js sends a few per request); more get 413 as
    /// soon as they are counted. Each `$snapshot` event is a chunk, and each new session the
    /// store keeps in memory until its segment is sealed.
    #[arg(long, default_value_t = 10_000)]
    pub max_events_per_request: usize,
}

impl Limits {
    /// Why these limits cannot work together with `max_body`, if they cannot.
    pub fn check(&self, max_body: usize) -> Option<String> {
        let need = 3 * max_body.max(self.max_decoded_bytes);
        (self.memory_budget_bytes < need).then(|| {
            format!(
                "--memory-budget-bytes {} is less than 3x the larger of --max-body-bytes and --max-decoded-bytes ({need}): the largest request could never be served",
                self.memory_budget_bytes
            )
        })
    }
}

#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes held by requests in flight.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// One request's part of the budget, returned when dropped.
#[derive(Debug)]
pub struct Share {
    budget: Arc<MemoryBudget>,
    held: usize,
}

impl Share {
    pub fn new(budget: Arc<MemoryBudget>) -> Share {
        Share { budget, held: 0 }
    }
}

impl Allowance for Share {
    fn take(&mut self, n: usize) -> bool {
        let ok = self.budget.try_take(n);
        if ok {
            self.held += n;
        }
        ok
    }

    fn give(&mut self, n: usize) {
        let n = n.min(self.held);
        self.held -= n;
        self.budget.give(n);
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.budget.give(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_take_within_the_limit_and_return_everything_when_dropped() {
        let budget = MemoryBudget::new(100);
        let mut a = Share::new(budget.clone());
        let mut b = Share::new(budget.clone());
        assert!(a.take(60));
        assert!(!b.take(41), "past the limit");
        assert!(b.take(40));
        a.give(1000); // more than it holds: returns only its own
        assert_eq!(budget.used(), 40);
        assert!(a.take(60));
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_largest_request_must_fit_the_budget() {
        let limits = Limits {
            max_decoded_bytes: 32 << 20,
            memory_budget_bytes: 64 << 20,
            max_events_per_request: 10,
        };
        assert!(limits.check(1 << 20).is_some());
        let limits = Limits {
            memory_budget_bytes: 96 << 20,
            ..limits
        };
        assert!(limits.check(20 << 20).is_none());
        assert!(limits.check(40 << 20).is_some());
    }
}
