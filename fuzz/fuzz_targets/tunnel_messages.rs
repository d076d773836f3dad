//! Fuzz target `tunnel_messages`: see `ferry_fuzzing::tunnel_messages` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzzing::tunnel_messages(data));
