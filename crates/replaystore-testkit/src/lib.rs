//! Test and benchmark support: the rrweb workload generator (realistic sessions, the crash
//! test's workload) and the fuzzing entry points shared by `fuzz/` and the test suite.

#[doc(hidden)]
pub mod fuzzing;
pub mod generator;
