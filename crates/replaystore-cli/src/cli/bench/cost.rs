//! What a byte costs over its whole life: CPU-seconds per GB of raw input for each phase
//! (ingest, regroup), measured as this process's user + system time around the phase, so the
//! store's background threads (flusher, compression workers) are counted with the caller's.

/// This process's CPU time so far (all threads, user + system), in seconds.
pub fn process_cpu_s() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable rusage; getrusage only writes it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return f64::NAN;
    }
    // SAFETY: getrusage succeeded, so it initialized the struct (zeroed before anyway).
    let u = unsafe { usage.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// The CPU time spent in one phase.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub cpu_s: f64,
}

/// Runs `f`, measuring the process CPU time it took.
pub fn phase<T>(f: impl FnOnce() -> T) -> (T, Phase) {
    let cpu = process_cpu_s();
    let out = f();
    let took = Phase {
        cpu_s: process_cpu_s() - cpu,
    };
    (out, took)
}

impl Phase {
    /// CPU-seconds per GB (1e9 bytes) of `raw_bytes` raw input.
    pub fn cpu_s_per_gb(&self, raw_bytes: u64) -> f64 {
        self.cpu_s / (raw_bytes as f64 / 1e9).max(1e-12)
    }
}

/// The `q` quantile (0..=1) of `v`, which it sorts; `None` when empty.
pub fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * q).round() as usize)
        .copied()
}

/// Where the posthog-js normalization (inflating the SDK's in-event gzip) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum NormalizeAt {
    /// Never: payloads stay as sent.
    None,
    /// On the flush path: hot blocks hold plain rrweb JSON; regroup only recompresses.
    Ingest,
    /// When an idle session is regrouped (the hot copy keeps the SDK's gzip).
    Regroup,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let (sum, p) = phase(|| {
            (0..20_000_000u64).fold(0u64, |a, x| std::hint::black_box(a.wrapping_add(x * x)))
        });
        assert!(sum > 0);
        assert!(p.cpu_s > 0.0, "{p:?}");
        assert!(p.cpu_s_per_gb(1_000_000_000) == p.cpu_s);
    }
}
