//! Link order for release builds (docs/performance.md, "Idle memory"): with `FERRY_LINK_ORDER` naming a symbol
//! ordering file, written by `bench/link-order.sh` from a profile of this very build, the linker (LLD, Rust's
//! default on x86_64 Linux) puts the functions that run next to each other, so that a node maps far fewer code
//! pages. Without it, the build is the usual one.

fn main() {
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
