//! Fuzz target `h1_watch`: see `ferry_fuzzing::h1_watch` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzzing::h1_watch(data));
