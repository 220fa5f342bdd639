//! The `install` phase: put the binaries and packages each host runs in
//! place (see [`crate::install`] for the methods).
//!
//! Everything that can be checked without a host is checked before
//! connecting ([`prepare`]): the local files to upload exist (else exit 2,
//! nothing done anywhere) and their sha256, read once in small buffers.
//! Uploads then stream each file to the hosts that need it and differ from
//! it ([`crate::remote::upload_file`]); their hashes are the desired inputs
//! of the units that run them, so a new kube-proxy is both a file change in
//! the plan and a restart of `kube-proxy.service` in the nodes phase.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::error::bad_input;
use crate::install::{self, binaries_for, binary_path, AptRequest, APT_BIN_DIR};
use crate::inventory::{Cluster, InstallMethod};
use crate::phase::Phase;
use crate::plan::{self, BinaryInput, FileAction, BINARY_MODE};
use crate::printer::HostProgress;
use crate::remote::{self, FileWrite, Host};
use crate::render::HostFiles;

use super::fleet::Fleet;

/// A local binary to upload, hashed.
#[derive(Debug, Clone)]
pub(crate) struct LocalBinary {
    pub(crate) name: &'static str,
    pub(crate) source: PathBuf,
    pub(crate) sha256: String,
}

/// What the install phase of this run will do, known before connecting.
#[derive(Debug, Clone)]
pub(crate) struct InstallWork {
    pub(crate) method: InstallMethod,
    /// The phase runs (not skipped).
    pub(crate) runs: bool,
    /// Binaries it uploads.
    pub(crate) uploads: Vec<LocalBinary>,
}

impl InstallWork {
    /// The binaries `master` (or a worker) runs, as unit inputs: uploaded
    /// ones with the sha256 they will have; the others as the host holds
    /// them (only those a unit runs: the rest matter to no plan).
    pub(crate) fn binary_inputs(&self, bin_dir: &str, master: bool) -> Vec<BinaryInput> {
        binaries_for(master)
            .filter_map(|binary| {
                let sha256 = self
                    .uploads
                    .iter()
                    .find(|upload| upload.name == binary.name)
                    .map(|upload| upload.sha256.clone());
                if sha256.is_none() && binary.unit.is_none() {
                    return None;
                }
                Some(BinaryInput {
                    path: binary_path(bin_dir, binary.name),
                    sha256,
                    restarts: binary.unit.iter().map(|unit| unit.to_string()).collect(),
                })
            })
            .collect()
    }

    /// The binaries must already be on the hosts: services start in this
    /// run and nothing will place the binaries first. (A files-only run
    /// needs none.)
    pub(crate) fn needs_binaries_present(&self, phases: &[Phase]) -> bool {
        let starts_services = phases.iter().any(|phase| {
            matches!(
                phase,
                Phase::Etcd | Phase::ControlPlane | Phase::Nodes | Phase::Lb
            )
        });
        let placed = self.runs && self.method != InstallMethod::None;
        starts_services && !placed
    }
}

/// Check and hash what the install phase needs locally; a missing file is
/// bad input (exit 2), named with `upload_from`.
pub(crate) fn prepare(cluster: &Cluster, phases: &[Phase]) -> anyhow::Result<InstallWork> {
    let runs = phases.contains(&Phase::Install);
    let method = cluster.install.method;
    let mut work = InstallWork {
        method,
        runs,
        uploads: Vec::new(),
    };
    if !runs || method == InstallMethod::None {
        return Ok(work);
    }
    let names: Vec<&'static str> = match method {
        InstallMethod::Upload => binaries_for(true).map(|binary| binary.name).collect(),
        InstallMethod::Apt => {
            if cluster.install.bin_dir.trim_end_matches('/') != APT_BIN_DIR {
                return Err(bad_input(format!(
                    "install: method = \"apt\" puts Debian's and Kubernetes' programs in {APT_BIN_DIR}, but bin_dir is {:?}; set bin_dir = \"{APT_BIN_DIR}\"",
                    cluster.install.bin_dir
                )));
            }
            binaries_for(true)
                .filter(|binary| binary.package.is_none())
                .map(|binary| binary.name)
                .collect()
        }
        InstallMethod::None => Vec::new(),
    };
    let Some(folder) = &cluster.install.upload_from else {
        return Err(bad_input(format!(
            "install: no package carries {}: set [install] upload_from to a local folder holding {}",
            names.join(", "),
            if names.len() == 1 { "it" } else { "them" }
        )));
    };
    let missing: Vec<&str> = names
        .iter()
        .filter(|name| !folder.join(name).is_file())
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(bad_input(format!(
            "install: {} missing from upload_from {} (method = \"{}\" uploads {} from there)",
            missing.join(", "),
            folder.display(),
            match method {
                InstallMethod::Apt => "apt",
                _ => "upload",
            },
            names.join(", ")
        )));
    }
    for name in names {
        let source = folder.join(name);
        let sha256 = sha256_of_file(&source)?;
        work.uploads.push(LocalBinary {
            name,
            source,
            sha256,
        });
    }
    Ok(work)
}

/// SHA-256 of a local file, read in small buffers.
fn sha256_of_file(path: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 256 * 1024];
    loop {
        let read = file
            .read(&mut buffer)
            .with_context(|| format!("reading {}", path.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Run the install phase on every host.
pub(crate) async fn run(
    cluster: &Cluster,
    work: &InstallWork,
    fleet: &Fleet,
    hosts: &[&Host],
    progress: &HostProgress,
) -> anyhow::Result<Vec<String>> {
    if work.method == InstallMethod::None {
        return Ok(Vec::new());
    }
    let summaries = remote::for_each_host(
        hosts,
        |host| host.name.as_str(),
        fleet.concurrency,
        "install",
        true,
        progress,
        |host: &&Host| async move {
            let host: &Host = host;
            let master = fleet.is_master(&host.name);
            let mut summary = Vec::new();
            if work.method == InstallMethod::Apt {
                let request = AptRequest::for_node(cluster, master);
                let output = host
                    .run_script(&install::apt_script(&request))
                    .await
                    .context("installing packages with apt")?;
                summary.push(
                    output
                        .stdout
                        .lines()
                        .last()
                        .unwrap_or("packages in place")
                        .trim()
                        .to_string(),
                );
            }
            summary.push(upload_host(cluster, work, host, master).await?);
            let summary = summary.join("; ");
            Ok((summary.clone(), summary))
        },
    )
    .await?;
    Ok(summaries)
}

/// Upload what differs on one host; check every binary it runs is there.
async fn upload_host(
    cluster: &Cluster,
    work: &InstallWork,
    host: &Host,
    master: bool,
) -> anyhow::Result<String> {
    let bin_dir = &cluster.install.bin_dir;
    let inputs: Vec<BinaryInput> = binaries_for(master)
        .map(|binary| BinaryInput {
            path: binary_path(bin_dir, binary.name),
            sha256: work
                .uploads
                .iter()
                .find(|upload| upload.name == binary.name)
                .map(|upload| upload.sha256.clone()),
            restarts: Vec::new(),
        })
        .collect();
    let paths: Vec<&str> = inputs.iter().map(|input| input.path.as_str()).collect();
    let state = remote::read_state(host, &paths, &[])
        .await
        .context("reading the binaries' state")?;
    let no_files = HostFiles {
        node: host.name.clone(),
        files: Vec::new(),
    };
    let scope = plan::ServiceScope {
        phases: &[],
        master,
    };
    let plan = plan::plan_host(&no_files, &inputs, &state, scope);
    let mut uploaded = Vec::new();
    let mut mode_fixes = Vec::new();
    for change in &plan.files {
        let Some(upload) = work
            .uploads
            .iter()
            .find(|upload| binary_path(bin_dir, upload.name) == change.path)
        else {
            continue;
        };
        if change.action == FileAction::Mode {
            mode_fixes.push(FileWrite {
                path: &change.path,
                contents: &[],
                mode: BINARY_MODE,
                contents_differ: false,
            });
            continue;
        }
        remote::upload_file(
            host,
            &upload.source,
            &change.path,
            BINARY_MODE,
            &upload.sha256,
        )
        .await?;
        uploaded.push(upload.name);
    }
    remote::write_files(host, &mode_fixes, &plan.stray_temporaries)
        .await
        .context("fixing the binaries' modes")?;
    // What no upload placed must be there now (packages, or the operator).
    let absent: Vec<&str> = inputs
        .iter()
        .filter(|input| input.sha256.is_none())
        .filter(|input| matches!(state.files.get(&input.path), Some(None) | None))
        .map(|input| input.path.as_str())
        .collect();
    if !absent.is_empty() {
        anyhow::bail!(
            "after installing, still missing: {} (no package provided {})",
            absent.join(", "),
            if absent.len() == 1 { "it" } else { "them" }
        );
    }
    let mut summary = Vec::new();
    if uploaded.is_empty() {
        summary.push("binaries up to date".to_string());
    } else {
        summary.push(format!("uploaded {}", uploaded.join(", ")));
    }
    if !mode_fixes.is_empty() {
        summary.push(format!("{} mode(s) fixed", mode_fixes.len()));
    }
    Ok(summary.join(", "))
}
