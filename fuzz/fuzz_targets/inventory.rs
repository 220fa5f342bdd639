//! Arbitrary bytes as an inventory file: see `ocfk8s_fuzz::check_inventory`
//! for what must hold.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The loader refuses non-UTF-8 files before parsing.
    if let Ok(text) = std::str::from_utf8(data) {
        ocfk8s_fuzz::check_inventory(text);
    }
});
