//! The config examples in docs/gateway.md parse and compile, so that the documentation cannot drift from the code.

use ferry_edge::Gateway;

/// Every ```toml block of docs/gateway.md.
fn toml_blocks() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/gateway.md"
    ))
    .expect("docs/gateway.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_example_parses_and_the_complete_ones_compile() {
    let blocks = toml_blocks();
    assert!(blocks.len() >= 4, "found {} toml blocks", blocks.len());
    let mut compiled = 0;
    for (i, b) in blocks.iter().enumerate() {
        let config: ferry_config::Config =
            toml::from_str(b).unwrap_or_else(|e| panic!("block {i} does not parse: {e}\n{b}"));
        // blocks with routes and no files or directories to read are complete: they must compile too
        let g = &config.gateway;
        let files = g.routes.iter().any(|r| r.static_dir.is_some())
            || g.upstreams
                .values()
                .any(|u| u.ca_file.is_some() || u.client_cert.is_some());
        if !g.routes.is_empty() && !files {
            // a route's `listeners` name the block's own listeners
            let names = ferry_edge::ListenerNames::of_config(&config.server);
            Gateway::validate_on(g, &names)
                .unwrap_or_else(|e| panic!("block {i} does not compile: {e}\n{b}"));
            compiled += 1;
        }
    }
    assert!(compiled >= 2, "only {compiled} complete examples");
}
