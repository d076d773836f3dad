//! Fuzz target `nginx`: see `ferry_fuzzing::nginx` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzzing::nginx(data));
