//! The phases every operation runs through, in order, and `--skip-phases`.

use std::collections::BTreeSet;
use std::fmt;

use crate::error::bad_input;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Preflight,
    Pki,
    Install,
    Files,
    Etcd,
    ControlPlane,
    Nodes,
    Lb,
    Addons,
}

impl Phase {
    pub(crate) const ALL: [Phase; 9] = [
        Phase::Preflight,
        Phase::Pki,
        Phase::Install,
        Phase::Files,
        Phase::Etcd,
        Phase::ControlPlane,
        Phase::Nodes,
        Phase::Lb,
        Phase::Addons,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::Pki => "pki",
            Phase::Install => "install",
            Phase::Files => "files",
            Phase::Etcd => "etcd",
            Phase::ControlPlane => "control-plane",
            Phase::Nodes => "nodes",
            Phase::Lb => "lb",
            Phase::Addons => "addons",
        }
    }

    /// Phases that every run needs: skipping them is bad usage.
    pub(crate) fn required(self) -> bool {
        matches!(self, Phase::Preflight | Phase::Pki)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The phases to run, in order, after `--skip-phases` (exit 2 on an unknown
/// or unskippable phase).
pub(crate) fn phases_to_run(skip: &[String]) -> anyhow::Result<Vec<Phase>> {
    let mut skipped = BTreeSet::new();
    for name in skip
        .iter()
        .map(|name| name.trim())
        .filter(|name| !name.is_empty())
    {
        let phase = Phase::ALL
            .into_iter()
            .find(|phase| phase.name() == name)
            .ok_or_else(|| {
                bad_input(format!(
                    "--skip-phases: unknown phase {name:?}; phases are {}",
                    Phase::ALL.map(Phase::name).join(", ")
                ))
            })?;
        if phase.required() {
            return Err(bad_input(format!(
                "--skip-phases: the {phase} phase cannot be skipped"
            )));
        }
        skipped.insert(phase);
    }
    Ok(Phase::ALL
        .into_iter()
        .filter(|phase| !skipped.contains(phase))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_in_order_and_refuses_required_or_unknown_phases() {
        let run = phases_to_run(&["etcd".into(), "addons".into(), "lb".into()]).expect("phases");
        assert_eq!(
            run,
            [
                Phase::Preflight,
                Phase::Pki,
                Phase::Install,
                Phase::Files,
                Phase::ControlPlane,
                Phase::Nodes
            ]
        );
        for bad in ["preflight", "pki", "etc"] {
            let error = phases_to_run(&[bad.into()]).expect_err(bad);
            assert_eq!(crate::error::exit_code(&error), 2, "{error}");
        }
    }
}
