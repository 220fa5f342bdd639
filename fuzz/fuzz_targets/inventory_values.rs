//! Arbitrary values in a valid inventory: the first byte chooses a field,
//! the rest (as UTF-8, lossily) becomes its value, written as a TOML string
//! into an inventory that is otherwise valid. Almost every input parses, so
//! the fuzzer spends its time where injections live: values that pass
//! validation and reach the templates. See `ocfk8s_fuzz::check_inventory`
//! for what must hold.

#![no_main]

use libfuzzer_sys::fuzz_target;

/// A valid inventory whose string values are placeholders `@0@`, `@1@`...
const INVENTORY: &str = r#"[cluster]
name = @0@
kubernetes_version = @1@
control_plane_endpoint = @2@
pod_cidr = @3@
service_cidr = @4@
cluster_domain = @5@

[ssh]
user = @6@
jump_host = @7@
identity_file = @8@

[install]
bin_dir = @9@

[ingress]
vip = @10@
interface = @11@
server_names = [@12@, "example.org"]

[[master]]
name = @13@
address = @14@
taints = [@15@]

[[worker]]
name = "w1"
address = "10.9.0.21"
ssh_user = @16@
labels = { @17@ = "ssd", zone = @18@ }
"#;

/// The value of each placeholder when it is not the one being fuzzed.
const DEFAULTS: &[&str] = &[
    "k8s",
    "1.31.4",
    "kube.example.org:6443",
    "10.244.0.0/16",
    "10.96.0.0/12",
    "cluster.local",
    "root",
    "admin@bastion.example.org",
    "~/.ssh/id_ed25519",
    "/usr/bin",
    "10.9.0.100",
    "eth0",
    "*.example.org",
    "m1",
    "10.9.0.11",
    "dedicated=batch:NoSchedule",
    "admin",
    "example.org/disk",
    "b",
];

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, value)) = data.split_first() else {
        return;
    };
    let chosen = usize::from(selector) % DEFAULTS.len();
    let value = String::from_utf8_lossy(value);
    let mut text = INVENTORY.to_string();
    // Last placeholder first, so `@1@` never matches inside `@12@`.
    for (index, default) in DEFAULTS.iter().enumerate().rev() {
        let written = if index == chosen {
            toml_string(&value)
        } else {
            toml_string(default)
        };
        text = text.replace(&format!("@{index}@"), &written);
    }
    ocfk8s_fuzz::check_inventory(&text);
});
