//! What every inventory fuzz target checks: parsing and validation never
//! panic, and an inventory that validates renders, with no control
//! character other than a newline or a tab in any file a host would
//! receive.
//!
//! Rendering needs a PKI store holding every file the cluster's hosts
//! receive; generating keys for each input would make the targets too slow
//! to be useful, so the store is placeholder files in memory (rendering
//! copies store files; it does not parse them).

use std::path::Path;

/// More hosts than this are valid but only slow the fuzzer down.
const MAX_NODES: usize = 16;

/// Parse and validate `text` as an inventory; render it when it validates
/// and panic on anything a host must never receive. Returns whether it
/// rendered.
pub fn check_inventory(text: &str) -> bool {
    let path = Path::new("/nonexistent/fuzz/inventory.toml");
    let Ok(resolved) = ocfk8s::inventory::from_str(path, text) else {
        return false;
    };
    let mut cluster = resolved.cluster;
    if cluster.nodes().count() > MAX_NODES {
        return false;
    }
    // Files named by the inventory do not exist here: render without them.
    cluster.templates_dir = None;
    if let Some(ingress) = &mut cluster.ingress {
        ingress.tls = None;
    }

    // Placeholder store files: rendering copies them, it does not parse them.
    let files = ocfk8s::render::required_store_files(&cluster)
        .into_iter()
        .map(|relative| (relative, b"placeholder\n".to_vec()))
        .collect();
    let store = ocfk8s::pki::Store::from_files_for_tests(Path::new("/nonexistent/fuzz/pki"), files);
    let options = ocfk8s::render::RenderOptions::for_cluster(&cluster);
    let hosts = match ocfk8s::render::render_cluster(&cluster, &store, &options) {
        Ok(hosts) => hosts,
        Err(error) => panic!("a validated inventory failed to render: {error:#}\n{text}"),
    };
    for host in &hosts {
        for file in &host.files {
            let contents = std::str::from_utf8(&file.contents)
                .unwrap_or_else(|_| panic!("{}:{} is not UTF-8", host.node, file.path));
            if let Some(bad) = contents
                .chars()
                .find(|character| character.is_control() && !matches!(character, '\n' | '\t'))
            {
                panic!(
                    "{}:{} holds the control character U+{:04X}\n{text}",
                    host.node, file.path, bad as u32
                );
            }
        }
    }
    true
}
