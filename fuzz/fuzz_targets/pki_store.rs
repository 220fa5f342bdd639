//! Arbitrary changes to a generated PKI store and to a kubeadm import
//! folder, then the checked loader and `pki import`: never a panic or a
//! hang, and never an accepted key that is not its certificate's (see
//! `ocfk8s::pki::fuzz_support` for the input format). Seeds in
//! `fuzz/corpus/pki_store/` (rewrite them with
//! `OCFK8S_FUZZ_SEEDS=fuzz/corpus/pki_store cargo test --lib write_fuzz_seeds -- --ignored`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ocfk8s::pki::fuzz_support::Fixture;

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let fixture = FIXTURE.get_or_init(|| Fixture::new().expect("generating the base store"));
    fixture.run(data);
});
