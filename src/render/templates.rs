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
        let text = std::fs::read_to_string(&path).map_err(|error| {
            bad_input(format!(
                "cannot read template override {}: {error}",
                path.display()
            ))
        })?;
        overrides.push((name, path, text));
    }
    Ok(overrides)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_file_is_built_in() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("templates folder")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        files.sort();
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
