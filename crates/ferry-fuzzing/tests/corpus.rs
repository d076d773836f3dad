//! Every committed fuzz input (the seeds in `fuzz/corpus/TARGET/` and the crashes turned regressions in
//! `fuzz/regressions/TARGET/`) run through its target as an ordinary test, so that a fixed crash stays fixed
//! without cargo-fuzz or a nightly compiler.

use std::path::PathBuf;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[test]
fn every_committed_input_passes_its_target() {
    let mut ran = 0;
    for kind in ["corpus", "regressions"] {
        for target in ferry_fuzzing::TARGETS {
            let dir = fuzz_dir().join(kind).join(target);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let data = std::fs::read(entry.path()).expect("read input");
                assert!(ferry_fuzzing::run(target, &data), "{target}");
                ran += 1;
            }
        }
    }
    assert!(
        ran >= ferry_fuzzing::TARGETS.len(),
        "only {ran} inputs found under {:?}",
        fuzz_dir()
    );
}

#[test]
fn targets_hold_on_known_inputs() {
    for (target, input) in [
        ("relay_path", &b"/relay/d/a/..%2fx"[..]),
        ("relay_path", b"/relay/d/a/%2e%2e;/x?q=..%2f"),
        ("normalize", b"gw/x/../%61dmin//"),
        (
            "h1_watch",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "headers",
            b"connection: x-a, upgrade\nx-a: 1\nupgrade: h2c\nte: gzip\nFerry-Target: y",
        ),
        ("tunnel_messages", b"{\"keepalive_interval_ms\":5000}"),
        (
            "config",
            b"\x00version = 1\n[server.http]\nkeepalive_timeout = \"1s\"\n",
        ),
        (
            "config",
            b"\x01FERRY_MAX_CONNECTIONS=x\nFERRY_LISTEN=127.0.0.1:0",
        ),
        ("tokens", b"\x00Bearer eyJhbGciOiJFZERTQSJ9.e30.AA"),
        ("tokens", b"\x01"),
        ("tokens", b"\x02{\"iss\":\"ferry\"}"),
        (
            "tokens",
            b"\x04{\"keys\":[{\"kty\":\"RSA\",\"n\":\"\",\"e\":\"\"}]}",
        ),
        ("routes", b"\x00"),
        (
            "routes",
            b"\x01[[routes]]\npath = \"/a\"\nrespond = {}\n\x00\x02\x01\x02",
        ),
    ] {
        assert!(ferry_fuzzing::run(target, input));
    }
}

/// The seeds made by code (`ferry_fuzzing::generated_seeds`) are the committed ones; with `FERRY_WRITE_SEEDS=1`
/// this writes them instead.
#[test]
fn generated_seeds_are_committed() {
    let write = std::env::var_os("FERRY_WRITE_SEEDS").is_some();
    for target in ferry_fuzzing::TARGETS {
        for (name, data) in ferry_fuzzing::generated_seeds(target) {
            let path = fuzz_dir().join("corpus").join(target).join(name);
            if write {
                std::fs::create_dir_all(path.parent().expect("a directory")).expect("mkdir");
                std::fs::write(&path, &data).expect("write seed");
            } else {
                let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
                assert!(
                    committed == data,
                    "{path:?} differs from the generated seed"
                );
            }
        }
    }
}
