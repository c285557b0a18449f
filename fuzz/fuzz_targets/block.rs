#![no_main]
//! cargo fuzz run block  (see docs/reliability.md)

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| replaystore_testkit::fuzzing::block(data));
