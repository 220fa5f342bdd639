//! Rendered trees for the render tests: an inventory, its PKI store, and
//! `ocfk8s render --out` run by the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

#[path = "../common/mod.rs"]
pub mod common;

pub use common::{run_in, Run, BASE};

/// A folder holding an inventory, its PKI store and rendered trees.
pub struct Rendered {
    pub dir: tempfile::TempDir,
    pub inventory: PathBuf,
    pub out: PathBuf,
    pub run: Run,
}

impl Rendered {
    /// `DIR/<host>` of the rendered tree.
    pub fn host(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }

    /// Run the binary again on this inventory: `-i <inventory>` then `args`.
    pub fn again(&self, args: &[&str]) -> Run {
        let mut full = vec!["-i", self.inventory.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        run_in(self.dir.path(), &full)
    }

    /// The inventory as the library resolves it, to render in process.
    pub fn cluster(&self) -> ocfk8s::inventory::Cluster {
        ocfk8s::inventory::load(&self.inventory)
            .expect("inventory")
            .cluster
    }

    /// The PKI store `render` generated.
    pub fn store(&self) -> ocfk8s::pki::Store {
        ocfk8s::pki::load(
            &self.cluster(),
            &ocfk8s::printer::Printer::new(0, true, true),
        )
        .expect("checked store")
    }

    /// A rendered file's text.
    pub fn text(&self, host: &str, path: &str) -> String {
        let full = self.host(host).join(path.trim_start_matches('/'));
        std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("{}: {error}", full.display()))
    }
}

/// The test inventory: 3 masters, 2 workers, `[ingress]` with its VIP on
/// `eth0`.
pub fn base_inventory() -> String {
    BASE.to_string()
}

/// Write `inventory` (inventory text) in a fresh folder, create its PKI
/// store, and render it to `out/`.
pub fn render(inventory: &str) -> Rendered {
    let (dir, path) = common::inventory(inventory);
    render_at(dir, path)
}

/// Create the PKI store of the inventory file `inventory` (inside `dir`)
/// and render it to `dir/out`.
pub fn render_at(dir: tempfile::TempDir, inventory: PathBuf) -> Rendered {
    generate_store(dir.path(), &inventory);
    let run = run_in(
        dir.path(),
        &[
            "-i",
            inventory.to_str().expect("utf-8 path"),
            "render",
            "--out",
            "out",
        ],
    );
    Rendered {
        out: dir.path().join("out"),
        dir,
        inventory,
        run,
    }
}

/// Create the inventory's PKI store with the real binary.
pub fn generate_store(dir: &Path, inventory: &Path) {
    let run = run_in(
        dir,
        &[
            "-i",
            inventory.to_str().expect("utf-8 path"),
            "pki",
            "generate",
        ],
    );
    assert_eq!(run.status, 0, "pki generate failed: {}", run.stderr);
}

/// Every file below `dir`, as absolute host paths (`/etc/...`), sorted.
pub fn host_paths(dir: &Path) -> Vec<String> {
    common::tree(dir)
        .into_iter()
        .map(|relative| format!("/{relative}"))
        .collect()
}
