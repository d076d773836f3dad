//! Link order for release builds (docs/performance.md, "Idle memory"): with `FERRY_LINK_ORDER` naming a symbol
//! ordering file, written by `bench/link-order.sh` from a profile of this very build, the linker (LLD, Rust's
//! default on x86_64 Linux) puts the functions that run next to each other, so that a node maps far fewer code
//! pages. Without it, the build is the usual one.
//!
//! Relative relocations packed (`-z pack-relative-relocs`, DT_RELR) on Linux with glibc: the binary is
//! position-independent, and the dynamic loader reads every relocation of its table at start. Unpacked, that
//! table (`.rela.dyn`) is 1.7 MB, all of it resident in every Ferry process; packed, it is a few kilobytes.
//! Needs glibc 2.36 (Debian 12) or later to run; the linker records that as a versioned dependency
//! (`GLIBC_ABI_DT_RELR`), so an older glibc refuses the binary at start with a message naming it.

fn main() {
    let target = |key: &str| std::env::var(key).unwrap_or_default();
    if target("CARGO_CFG_TARGET_OS") == "linux" && target("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-env-changed=FERRY_LINK_ORDER");
    let Ok(path) = std::env::var("FERRY_LINK_ORDER") else {
        return;
    };
    if path.is_empty() {
        return;
    }
    println!("cargo:rerun-if-changed={path}");
    println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={path}");
    // names from another build of the same code that no longer exist are skipped, not an error
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}
