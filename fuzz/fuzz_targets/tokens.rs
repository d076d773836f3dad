//! Fuzz target `tokens`: see `ferry_fuzzing::tokens` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzzing::tokens(data));
