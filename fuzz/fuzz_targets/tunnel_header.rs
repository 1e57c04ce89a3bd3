#![no_main]
//! Fuzz target: see `ferry_federation::fuzzing::tunnel_header`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_federation::fuzzing::tunnel_header(data));
