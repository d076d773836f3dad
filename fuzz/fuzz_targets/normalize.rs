//! Fuzz target `normalize`: see `ferry_fuzzing::normalize` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzzing::normalize(data));
