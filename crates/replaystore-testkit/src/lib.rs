//! Test and benchmark support: the rrweb workload generator (realistic sessions, the crash
//! test's workload), the fuzzing entry points shared by `fuzz/` and the test suite, the peer
//! systems `replaystore bench` measures beside the store (`peers`; fjall and RocksDB behind
//! features, never in the default build), the server load test (`load`) and the process the
//! crash tests kill (`crash_writer`). The `replaystore` binary's hidden commands call them.

pub mod crash_writer;
#[doc(hidden)]
pub mod fuzzing;
pub mod generator;
pub mod load;
pub mod peers;
