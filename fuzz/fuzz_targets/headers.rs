//! Fuzz target `headers`: see `ferry_fuzzing::headers` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzzing::headers(data));
