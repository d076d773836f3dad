//! Fuzz target `routes`: see `ferry_fuzzing::routes` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzzing::routes(data));
