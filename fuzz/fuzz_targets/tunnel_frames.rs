//! Fuzz target `tunnel_frames`: see `ferry_fuzzing::tunnel_frames` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzzing::tunnel_frames(data));
