#![no_main]
//! Fuzz target: see `ferry_dns::fuzzing::precheck`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_dns::fuzzing::precheck(data));
