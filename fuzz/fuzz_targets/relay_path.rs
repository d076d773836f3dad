//! Fuzz target `relay_path`: see `ferry_fuzzing::relay_path` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzzing::relay_path(data));
