//! Fuzz target `config`: see `ferry_fuzzing::config` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzzing::config(data));
