#![no_main]
//! Fuzz target: see `ferry_federation::fuzzing::link_frames`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_federation::fuzzing::link_frames(data));
