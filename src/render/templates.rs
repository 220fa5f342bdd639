//! The template environment: every template is compiled into the binary,
//! and an operator may replace any of them with a file of the same name in
//! an override folder (`--templates DIR` or `[cluster] templates_dir`).
//!
//! Settings chosen so that templates behave like the files they produce:
//! undefined variables are errors (a typo never renders as an empty string),
//! nothing is escaped (these are YAML, INI and nginx files, not HTML), block
//! tags take their line with them (`trim_blocks`/`lstrip_blocks`), and the
//! final newline is kept.
//!
//! A file in the override folder that is not the name of a template is an
//! error: a misspelt override would otherwise be silently ignored.
//!
//! # Values are written for their destination
//!
//! The inventory is validated before anything renders, so values are
//! already plain; the templates still quote by destination, so that a value
//! that somehow got past validation fails the rendering instead of adding a
//! line to a file. Every `{{ ... }}` goes through a formatter that refuses a
//! value holding a control character (a newline would start a new directive
//! in a unit, a YAML key, a keepalived or nginx statement). Two filters quote
//! for a destination: `systemd` writes one word of an `ExecStart=` line
//! (quoted and escaped when needed, `%` and `$` doubled), and `yaml` writes a
//! double-quoted YAML scalar (or a flow sequence of them). `word` is for
//! configurations with no quoting worth trusting (keepalived, nginx, the
//! Corefile): it refuses anything but the characters of names, addresses
//! and paths, so a value stays one token.

use std::path::Path;

use minijinja::syntax::SyntaxConfig;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::error::bad_input;

/// Every built-in template: its name (the file name an override uses) and
/// its source.
pub(crate) const BUILT_IN: &[(&str, &str)] = &[
    ("etcd.service", include_str!("../../templates/etcd.service")),
    (
        "etcd-initial-cluster.env",
        include_str!("../../templates/etcd-initial-cluster.env"),
    ),
    (
        "kubelet.service",
        include_str!("../../templates/kubelet.service"),
    ),
    (
        "kubelet-config.yaml",
        include_str!("../../templates/kubelet-config.yaml"),
    ),
    (
        "kube-proxy.service",
        include_str!("../../templates/kube-proxy.service"),
    ),
    (
        "kube-proxy-config.conf",
        include_str!("../../templates/kube-proxy-config.conf"),
    ),
    (
        "modules-load-k8s.conf",
        include_str!("../../templates/modules-load-k8s.conf"),
    ),
    (
        "sysctl-kubernetes.conf",
        include_str!("../../templates/sysctl-kubernetes.conf"),
    ),
    (
        "kube-apiserver.yaml",
        include_str!("../../templates/kube-apiserver.yaml"),
    ),
    (
        "kube-controller-manager.yaml",
        include_str!("../../templates/kube-controller-manager.yaml"),
    ),
    (
        "kube-scheduler.yaml",
        include_str!("../../templates/kube-scheduler.yaml"),
    ),
    (
        "addon-rbac.yaml",
        include_str!("../../templates/addon-rbac.yaml"),
    ),
    (
        "addon-flannel.yaml",
        include_str!("../../templates/addon-flannel.yaml"),
    ),
    (
        "addon-weave.yaml",
        include_str!("../../templates/addon-weave.yaml"),
    ),
    (
        "addon-coredns.yaml",
        include_str!("../../templates/addon-coredns.yaml"),
    ),
    (
        "addon-ingress-nginx.yaml",
        include_str!("../../templates/addon-ingress-nginx.yaml"),
    ),
    (
        "keepalived.conf",
        include_str!("../../templates/keepalived.conf"),
    ),
    (
        "nginx-ingress.conf",
        include_str!("../../templates/nginx-ingress.conf"),
    ),
    (
        "containerd-config.toml",
        include_str!("../../templates/containerd-config.toml"),
    ),
    ("crictl.yaml", include_str!("../../templates/crictl.yaml")),
];

/// The compiled templates, built-in or overridden.
pub(crate) struct Templates {
    environment: Environment<'static>,
    /// Where each overridden template came from, for error messages.
    overridden: Vec<(String, std::path::PathBuf)>,
}

impl Templates {
    /// Compile the built-in templates, replacing those that `override_dir`
    /// holds a file for. Errors (exit 2) name the override file and line.
    pub(crate) fn load(override_dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut environment = Environment::new();
        environment.set_undefined_behavior(UndefinedBehavior::Strict);
        environment.set_auto_escape_callback(|_| AutoEscape::None);
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .map_err(|error| anyhow::anyhow!("template syntax settings: {error}"))?;
        environment.set_syntax(syntax);
        environment.set_formatter(no_control_characters);
        environment.add_filter("systemd", systemd_word);
        environment.add_filter("yaml", yaml_scalar);
        environment.add_filter("word", config_word);
        environment.add_filter("toml", toml_string);

        let overrides = match override_dir {
            Some(dir) => read_overrides(dir)?,
            None => Vec::new(),
        };
        let mut overridden = Vec::new();
        for (name, source) in BUILT_IN {
            let override_file = overrides.iter().find(|(file, _, _)| file == name);
            match override_file {
                Some((file, path, text)) => {
                    environment
                        .add_template_owned(file.clone(), text.clone())
                        .map_err(|error| {
                            bad_input(format!(
                                "template override {}{}",
                                path.display(),
                                describe(&error)
                            ))
                        })?;
                    overridden.push((file.clone(), path.clone()));
                }
                None => environment
                    .add_template(name, source)
                    .map_err(|error| anyhow::anyhow!("built-in template {name}: {error}"))?,
            }
        }
        Ok(Templates {
            environment,
            overridden,
        })
    }

    /// Render template `name` with `context`. A failure names the template
    /// file and line; in an override it is bad input (exit 2).
    pub(crate) fn render(&self, name: &str, context: &Value) -> anyhow::Result<Vec<u8>> {
        let template = self
            .environment
            .get_template(name)
            .map_err(|error| anyhow::anyhow!("template {name}: {error}"))?;
        let text = template.render(context.clone()).map_err(|error| {
            match self.overridden.iter().find(|(file, _)| file == name) {
                Some((_, path)) => bad_input(format!(
                    "template override {}{}",
                    path.display(),
                    describe(&error)
                )),
                None => anyhow::anyhow!("built-in template {name}{}", describe(&error)),
            }
        })?;
        Ok(text.into_bytes())
    }
}

/// The formatter behind every `{{ ... }}`: as minijinja's own, but a value
/// holding a control character is an error rather than a new line in the
/// file.
fn no_control_characters(
    out: &mut minijinja::Output<'_>,
    state: &mut minijinja::State<'_, '_>,
    value: &Value,
) -> Result<(), minijinja::Error> {
    if let Some(text) = value.as_str() {
        if let Some(bad) = text.chars().find(|character| character.is_control()) {
            return Err(invalid_value(text, bad));
        }
    }
    minijinja::escape_formatter(out, state, value)
}

fn invalid_value(text: &str, bad: char) -> minijinja::Error {
    minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        format!(
            "value \"{}\" holds the control character U+{:04X}, which would break the rendered file",
            crate::input_file::excerpt(text, 64),
            bad as u32
        ),
    )
}

/// Characters a systemd command line takes literally outside quotes.
fn systemd_plain(character: char) -> bool {
    character.is_ascii_alphanumeric()
        || matches!(
            character,
            '/' | '.' | '_' | ',' | '=' | ':' | '+' | '@' | '-'
        )
}

/// One word of a systemd `ExecStart=` line: as it is when it holds only
/// plain characters, else double-quoted with `\` and `"` escaped and the
/// specifier and variable signs doubled (`%%`, `$$`). Control characters
/// are refused: systemd has no way to carry them safely.
pub(crate) fn systemd_word(text: &str) -> Result<String, minijinja::Error> {
    if let Some(bad) = text.chars().find(|character| character.is_control()) {
        return Err(invalid_value(text, bad));
    }
    if !text.is_empty() && text.chars().all(systemd_plain) {
        return Ok(text.to_string());
    }
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        match character {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '%' => quoted.push_str("%%"),
            '$' => quoted.push_str("$$"),
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    Ok(quoted)
}

/// One token of a keepalived, nginx or CoreDNS configuration: names,
/// addresses and paths only. Whitespace, quotes, `;`, `{`, `}`, `#` and `$`
/// would end the token or start something else, so they are refused.
pub(crate) fn config_word(text: &str) -> Result<String, minijinja::Error> {
    let plain = |character: char| {
        character.is_ascii_alphanumeric()
            || matches!(
                character,
                '.' | '_' | '-' | ':' | '/' | '*' | '[' | ']' | ',' | '=' | '+' | '@'
            )
    };
    match text.chars().find(|character| !plain(*character)) {
        None if !text.is_empty() => Ok(text.to_string()),
        None => Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            "an empty value where a configuration needs a word",
        )),
        Some(bad) if bad.is_control() => Err(invalid_value(text, bad)),
        Some(bad) => Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!(
                "value \"{}\" holds {bad:?}, which would end a word of the configuration",
                crate::input_file::excerpt(text, 64)
            ),
        )),
    }
}

/// A YAML value: a string as a double-quoted scalar with every character
/// YAML would not print as itself escaped (so it is never a new line, a
/// comment or a flow indicator, and "123" or "true" stay strings); numbers
/// and booleans as they are; a sequence as a flow sequence of those.
pub(crate) fn yaml_scalar(value: &Value) -> Result<String, minijinja::Error> {
    use minijinja::value::ValueKind;
    match value.kind() {
        ValueKind::String => Ok(yaml_quoted(value.as_str().unwrap_or_default())),
        ValueKind::Number | ValueKind::Bool => Ok(value.to_string()),
        ValueKind::None | ValueKind::Undefined => Ok("null".to_string()),
        ValueKind::Seq | ValueKind::Iterable => {
            let mut items = Vec::new();
            for item in value.try_iter()? {
                items.push(yaml_scalar(&item)?);
            }
            Ok(format!("[{}]", items.join(", ")))
        }
        other => Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("the yaml filter writes strings, numbers and lists, not a {other}"),
        )),
    }
}

/// A string as a TOML basic string, escaped as TOML requires.
pub(crate) fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// `text` as a YAML double-quoted scalar.
pub(crate) fn yaml_quoted(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            ' '..='~' => quoted.push(character),
            // What YAML prints as itself, less the line and paragraph
            // separators and the byte order mark.
            '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..
                if !matches!(character, '\u{2028}' | '\u{2029}' | '\u{feff}') =>
            {
                quoted.push(character)
            }
            other if (other as u32) <= 0xff => quoted.push_str(&format!("\\x{:02x}", other as u32)),
            other if (other as u32) <= 0xffff => {
                quoted.push_str(&format!("\\u{:04x}", other as u32))
            }
            other => quoted.push_str(&format!("\\U{:08x}", other as u32)),
        }
    }
    quoted.push('"');
    quoted
}

/// `, line N: message` from a minijinja error (the caller names the file).
fn describe(error: &minijinja::Error) -> String {
    let mut text = String::new();
    if let Some(line) = error.line() {
        text.push_str(&format!(", line {line}"));
    }
    text.push_str(": ");
    text.push_str(&error.kind().to_string());
    if let Some(detail) = error.detail() {
        text.push_str(&format!(" ({detail})"));
    }
    text
}

/// `(template name, path, text)` of every override file in `dir`.
fn read_overrides(dir: &Path) -> anyhow::Result<Vec<(String, std::path::PathBuf, String)>> {
    let entries = std::fs::read_dir(dir).map_err(|error| {
        bad_input(format!(
            "cannot read template folder {}: {error}",
            dir.display()
        ))
    })?;
    let mut overrides = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| {
            bad_input(format!(
                "cannot read template folder {}: {error}",
                dir.display()
            ))
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if !BUILT_IN.iter().any(|(known, _)| *known == name) {
            let known: Vec<&str> = BUILT_IN.iter().map(|(known, _)| *known).collect();
            return Err(bad_input(format!(
                "{} is not a template ocfk8s renders; templates are: {}",
                path.display(),
                known.join(", ")
            )));
        }
        let text = crate::input_file::read_text(&path, crate::input_file::MAX_TEXT_FILE).map_err(
            |error| {
                bad_input(format!(
                    "cannot read template override {}: {error}",
                    path.display()
                ))
            },
        )?;
        overrides.push((name, path, text));
    }
    Ok(overrides)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::inventory::Cluster;
    use crate::render::context::Context;
    use crate::render::EtcdBootstrap;

    const INVENTORY: &str = r#"
[cluster]
name = "unit"
kubernetes_version = "1.31.4"

[ingress]
vip = "192.0.2.100"
interface = "eth0"
server_names = ["*.example.org"]

[[master]]
name = "m1"
address = "192.0.2.11"

[[worker]]
name = "w1"
address = "192.0.2.21"
"#;

    /// Render `template` for the first master (or the first worker) of a
    /// valid cluster changed by `tamper`, as if a value had got past
    /// validation.
    fn render_tampered(
        template: &str,
        worker: bool,
        tamper: impl Fn(&mut Cluster),
    ) -> anyhow::Result<String> {
        let path = Path::new("/nonexistent/inventory.toml");
        let mut cluster = crate::inventory::from_str(path, INVENTORY)
            .expect("inventory")
            .cluster;
        tamper(&mut cluster);
        let node = if worker {
            &cluster.workers[0]
        } else {
            &cluster.masters[0]
        };
        let etcd = EtcdBootstrap::new_cluster(&cluster);
        let context = Context::new(&cluster, node, &etcd, Default::default());
        let templates = Templates::load(None).expect("built-in templates");
        let bytes = templates.render(template, &Value::from(minijinja::value::Serde(&context)))?;
        Ok(String::from_utf8(bytes).expect("utf-8"))
    }

    #[test]
    fn a_value_with_a_newline_fails_the_rendering_instead_of_adding_a_line() {
        let error = render_tampered("kubelet.service", true, |cluster| {
            cluster.workers[0].labels.insert(
                "zone".to_string(),
                "v\nExecStartPre=/bin/touch /tmp/pwned\nX=".to_string(),
            );
        })
        .expect_err("a newline in a label");
        assert!(
            format!("{error:#}").contains("control character"),
            "{error:#}"
        );
        let error = render_tampered("keepalived.conf", false, |cluster| {
            if let Some(ingress) = &mut cluster.ingress {
                ingress.interface = "eth0\n}\nvrrp_script x {".to_string();
            }
        })
        .expect_err("a newline in an interface");
        assert!(
            format!("{error:#}").contains("control character"),
            "{error:#}"
        );
        let error = render_tampered("keepalived.conf", false, |cluster| {
            if let Some(ingress) = &mut cluster.ingress {
                ingress.interface = "eth0 dev lo".to_string();
            }
        })
        .expect_err("a space in an interface");
        assert!(format!("{error:#}").contains("end a word"), "{error:#}");
    }

    #[test]
    fn unit_words_are_quoted_and_escaped_for_systemd() {
        let unit = render_tampered("kubelet.service", true, |cluster| {
            cluster.install.bin_dir = "/opt/my $HOME/100%\"bin".to_string();
        })
        .expect("render");
        assert!(
            unit.contains("ExecStart=\"/opt/my $$HOME/100%%\\\"bin/kubelet\" \\\n"),
            "{unit}"
        );
        assert!(systemd_word("a\u{7f}b").is_err());
        assert_eq!(
            systemd_word("/usr/bin/etcd").expect("plain"),
            "/usr/bin/etcd"
        );
    }

    #[test]
    fn yaml_values_are_quoted_scalars_that_read_back_as_written() {
        let hostile = "v\"\n: x\u{7f}\u{2028}#\\";
        let config = render_tampered("kubelet-config.yaml", true, |cluster| {
            cluster.workers[0].taints = vec![format!("key={hostile}:NoSchedule")];
        })
        .expect("render");
        let parsed: serde_norway::Value = serde_norway::from_str(&config).expect("YAML");
        let value = &parsed["registerWithTaints"][0]["value"];
        assert_eq!(value.as_str(), Some(hostile), "{config}");
        assert_eq!(yaml_quoted("123"), "\"123\"");
        let kube_proxy = render_tampered("kube-proxy-config.conf", true, |cluster| {
            cluster.workers[0].name = "123".to_string();
        })
        .expect("render");
        let parsed: serde_norway::Value = serde_norway::from_str(&kube_proxy).expect("YAML");
        assert_eq!(parsed["hostnameOverride"].as_str(), Some("123"));
    }

    #[test]
    fn every_template_file_is_built_in() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let files = crate::test_support::listing(&dir);
        let mut built_in: Vec<String> = BUILT_IN.iter().map(|(name, _)| name.to_string()).collect();
        built_in.sort();
        assert_eq!(files, built_in);
    }

    #[test]
    fn undefined_variables_are_errors_and_newlines_are_kept() {
        let templates = Templates::load(None).expect("built-in templates");
        let error = templates
            .render("modules-load-k8s.conf", &Value::from(()))
            .map(|_| ())
            .err();
        assert!(error.is_none(), "modules-load uses no variable");
        let error = templates
            .render("kubelet.service", &Value::from(()))
            .expect_err("kubelet.service needs node");
        assert!(format!("{error:#}").contains("line 1"), "{error:#}");
        let text = templates
            .render("modules-load-k8s.conf", &Value::from(()))
            .expect("render");
        assert!(text.ends_with(b"br_netfilter\n"));
    }
}
