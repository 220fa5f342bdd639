//! Acting on a host's services through `systemctl`: a pure script builder
//! and a thin async wrapper, like the other remote steps.
//!
//! One script per host and step: `daemon-reload` (unit files may have just
//! been written), then for each service in order `enable` (daemons), the
//! action (`start`, `restart`, or `reload` after the service's own config
//! check), and, once the action succeeded, the record of the inputs it now
//! runs with (written atomically under [`crate::units::STAMP_DIR`]). The
//! script stops at the first failure and names the unit.

use std::fmt::Write as _;

use anyhow::Context;

use super::session::Host;
use super::shell::quote;
use crate::plan::{ServiceAction, ServiceChange};
use crate::units::{self, STAMP_DIR};

/// A unit name fit for scripts and file names: `name.service` of safe
/// characters (they come from ocfk8s's own table, checked all the same).
fn check_unit(unit: &str) -> anyhow::Result<()> {
    let valid = unit.ends_with(".service")
        && !unit.starts_with('.')
        && unit
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.@".contains(&byte));
    if !valid {
        anyhow::bail!("refusing to manage the unit {unit:?}");
    }
    Ok(())
}

/// The configuration check run before reloading `unit`, if it has one.
fn config_check(unit: &str) -> Option<&'static str> {
    match unit {
        "nginx.service" => Some("nginx -t -q"),
        _ => None,
    }
}

/// The script applying `changes` on a host.
pub(crate) fn apply_script(changes: &[ServiceChange]) -> anyhow::Result<String> {
    let mut script = String::from(
        "set -u\nexport LC_ALL=C\n\
         fail() { printf '%s\\n' \"$*\" >&2; exit 1; }\n\
         systemctl daemon-reload || fail 'systemctl daemon-reload failed'\n",
    );
    let _ = writeln!(
        script,
        "mkdir -p {dir} && chmod 0755 {dir} || fail 'cannot create {dir}'",
        dir = quote(STAMP_DIR)
    );
    for change in changes {
        check_unit(&change.unit)?;
        if !change
            .inputs_sha256
            .bytes()
            .all(|byte| byte.is_ascii_hexdigit())
        {
            anyhow::bail!("unexpected inputs hash for {}", change.unit);
        }
        let unit = quote(&change.unit);
        if units::unit(&change.unit).daemon {
            let _ = writeln!(
                script,
                "systemctl enable {unit} >/dev/null 2>&1 || fail {}",
                quote(&format!("systemctl enable {} failed", change.unit))
            );
        }
        if change.action == ServiceAction::Reload {
            if let Some(check) = config_check(&change.unit) {
                let _ = writeln!(
                    script,
                    "out=$({check} 2>&1) || fail {}\"$out\"",
                    quote(&format!(
                        "{}: configuration check `{check}` failed: ",
                        change.unit
                    ))
                );
            }
        }
        let verb = change.action.verb();
        let _ = writeln!(
            script,
            "out=$(systemctl {verb} {unit} 2>&1) || fail {}\"$out\"",
            quote(&format!("systemctl {verb} {} failed: ", change.unit))
        );
        let stamp = format!("{STAMP_DIR}/{}", change.unit);
        let _ = writeln!(
            script,
            "printf '%s\\n' {inputs} > {temporary} && mv -f {temporary} {stamp} || fail {failed}",
            inputs = quote(&change.inputs_sha256),
            temporary = quote(&format!("{stamp}.tmp")),
            stamp = quote(&stamp),
            failed = quote(&format!("cannot record the inputs of {}", change.unit)),
        );
        let _ = writeln!(script, "echo {}", quote(&format!("{verb} {}", change.unit)));
    }
    Ok(script)
}

/// Apply `changes` on `host`, in order; the error names the unit.
pub(crate) async fn apply(host: &Host, changes: &[ServiceChange]) -> anyhow::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let _timer = crate::timings::step("service changes");
    let script = apply_script(changes)?;
    host.run_script(&script)
        .await
        .map(drop)
        .with_context(|| format!("services on {}", host.name))
}

/// `systemctl is-active UNIT` on `host`.
pub(crate) async fn is_active(host: &Host, unit: &str) -> anyhow::Result<String> {
    check_unit(unit)?;
    let output = host
        .exec(&format!("systemctl is-active {}", quote(unit)))
        .await?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(unit: &str, action: ServiceAction) -> ServiceChange {
        ServiceChange {
            unit: unit.into(),
            action,
            reason: "test".into(),
            phase: "lb",
            inputs_sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn checks_nginx_before_reloading_and_records_inputs_after_each_action() {
        let script = apply_script(&[
            change("etcd.service", ServiceAction::Restart),
            change("nginx.service", ServiceAction::Reload),
        ])
        .expect("script");
        let enable = script
            .find("systemctl enable 'etcd.service'")
            .expect("enable");
        let restart = script
            .find("systemctl restart 'etcd.service'")
            .expect("restart");
        let record = script
            .find("'/var/lib/ocfk8s/units/etcd.service'")
            .expect("record");
        assert!(enable < restart && restart < record, "{script}");
        let check = script.find("nginx -t -q").expect("nginx -t");
        let reload = script
            .find("systemctl reload 'nginx.service'")
            .expect("reload");
        assert!(check < reload, "{script}");
    }

    #[test]
    fn refuses_odd_unit_names() {
        assert!(apply_script(&[change("x'; rm -rf /; '.service", ServiceAction::Start)]).is_err());
        assert!(apply_script(&[change("etcd", ServiceAction::Start)]).is_err());
    }

    #[test]
    fn the_script_runs_under_sh_and_stops_at_the_first_failure() {
        // A stand-in systemctl on PATH: `start` of bad.service fails.
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let fake = bin.join("systemctl");
        std::fs::write(
            &fake,
            "#!/bin/sh\n[ \"$2\" = bad.service ] && [ \"$1\" = start ] && { echo 'Job failed' >&2; exit 1; }\nexit 0\n",
        )
        .expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let script = apply_script(&[
            change("good.service", ServiceAction::Start),
            change("bad.service", ServiceAction::Start),
            change("after.service", ServiceAction::Start),
        ])
        .expect("script")
        .replace(STAMP_DIR, &dir.path().join("stamps").display().to_string());
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .output()
            .expect("sh");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("systemctl start bad.service failed: Job failed"),
            "{stderr}"
        );
        let stamps = dir.path().join("stamps");
        assert_eq!(
            std::fs::read_to_string(stamps.join("good.service")).expect("recorded"),
            format!("{}\n", "ab".repeat(32))
        );
        assert!(!stamps.join("bad.service").exists());
        assert!(!stamps.join("after.service").exists());
    }
}
