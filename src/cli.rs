//! Command-line definitions only; the logic lives in [`crate::commands`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "ocfk8s",
    version,
    about = "Bootstrap and operate a bare-metal Kubernetes cluster from one inventory file",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The inventory file
    #[arg(
        short,
        long,
        global = true,
        env = "OCFK8S_INVENTORY",
        default_value = "inventory/ocf.toml"
    )]
    pub inventory: PathBuf,

    /// Say more (repeat for more detail)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Print only errors and the requested output
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Plain lines instead of progress bars, even on a terminal
    #[arg(long, global = true)]
    pub no_progress: bool,

    /// How many hosts to work on at once (overrides [ssh] concurrency)
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,

    /// Trust and record host keys seen for the first time
    #[arg(long, global = true)]
    pub accept_new_host_keys: bool,

    /// Folder of templates overriding the built-in ones
    #[arg(long, global = true, value_name = "DIR")]
    pub templates: Option<PathBuf>,

    /// How long each health gate (an etcd member healthy and caught up, an
    /// apiserver ready, a kubelet healthy) waits before the run stops
    /// [default: per gate, 90 s for an etcd member]
    #[arg(long, global = true, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub health_timeout: Option<u64>,

    /// Print, when the run ends, how long each step took (to stderr)
    #[arg(long, global = true)]
    pub timings: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a commented starter inventory
    Init(InitArgs),
    /// Parse and check the inventory and print a summary
    Validate,
    /// Manage the local PKI store
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Inspect certificate expiry
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Write every host's files to DIR/<host>/<absolute path>
    Render(RenderArgs),
    /// Show, per host, the files and services that would change
    Plan(PlanArgs),
    /// Converge the whole cluster (safe to re-run)
    Bootstrap(BootstrapArgs),
    /// Show each host's services, etcd's members, the VIP holder and each
    /// apiserver's readiness; exit 0 when healthy, 1 when not
    Status(StatusArgs),
    /// Add a master listed in the inventory to etcd and the control plane
    AddMaster(AddMasterArgs),
    /// Join one worker listed in the inventory
    AddWorker(AddWorkerArgs),
    /// Remove a master (already taken out of the inventory) from etcd and
    /// the control plane
    RemoveMaster(RemoveArgs),
    /// Drain and remove a worker (already taken out of the inventory)
    RemoveWorker(RemoveArgs),
    /// Re-issue leaf certificates from the same CAs and roll them out,
    /// master by master, then workers, then the front door
    RotateCerts(RotateCertsArgs),
    /// etcd maintenance
    #[command(subcommand)]
    Etcd(EtcdCommand),
    /// Print a kubeconfig for the cluster
    Kubeconfig(KubeconfigArgs),
    /// Print shell completions
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Address of a master (repeatable)
    #[arg(long = "master", value_name = "ADDR")]
    pub masters: Vec<String>,
    /// Address of a worker (repeatable)
    #[arg(long = "worker", value_name = "ADDR")]
    pub workers: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create whatever PKI material is missing; never replaces what exists
    Generate,
    /// Adopt an existing cluster's CAs and leaves
    Import(PkiImportArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["from_kubeadm", "from_kubetool"])))]
pub struct PkiImportArgs {
    /// A master's /etc/kubernetes/pki, copied locally
    #[arg(long, value_name = "DIR", requires = "node")]
    pub from_kubeadm: Option<PathBuf>,
    /// kubetool's hiera folder (<Os>.yaml and <host>.yaml files)
    #[arg(long, value_name = "DIR")]
    pub from_kubetool: Option<PathBuf>,
    /// The master the kubeadm folder was copied from
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Expiry of every certificate, like `kubeadm certs check-expiration`
    Check(CertsCheckArgs),
}

#[derive(Debug, Args)]
pub struct CertsCheckArgs {
    /// Read what each host really has instead of the local store
    #[arg(long)]
    pub remote: bool,
    #[arg(short, long, value_enum, default_value_t = TableOrJson::Table)]
    pub output: TableOrJson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableOrJson {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TextOrJson {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Output folder
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub phases: PhaseArgs,
    #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
    /// Exit 0 when nothing is to do, 3 when changes are pending
    #[arg(long)]
    pub exit_code: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PhaseArgs {
    /// Phases to skip: install, files, etcd, control-plane, nodes, lb, addons
    #[arg(long, value_delimiter = ',', value_name = "PHASE")]
    pub skip_phases: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BootstrapArgs {
    #[command(flatten)]
    pub phases: PhaseArgs,
    /// Show what would be done without changing anything
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
}

#[derive(Debug, Args)]
pub struct AddMasterArgs {
    /// The master's name in the inventory
    pub name: String,
    #[command(flatten)]
    pub phases: PhaseArgs,
    /// Do not take an etcd snapshot before the change
    #[arg(long)]
    pub no_snapshot: bool,
}

#[derive(Debug, Args)]
pub struct AddWorkerArgs {
    /// The worker's name in the inventory
    pub name: String,
    /// Do not take an etcd snapshot before the change
    #[arg(long)]
    pub no_snapshot: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The host's name (no longer in the inventory)
    pub name: String,
    /// The host's address, when neither etcd nor the PKI store knows it
    #[arg(long, value_name = "ADDR")]
    pub address: Option<String>,
    /// The host is dead or unreachable: remove it without touching it
    #[arg(long)]
    pub force: bool,
    /// Do not take an etcd snapshot before the change
    #[arg(long)]
    pub no_snapshot: bool,
}

#[derive(Debug, Args)]
pub struct RotateCertsArgs {
    /// Only the certificates that expire within this time (30d, 12h, 90m,
    /// 2w)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub expiring_within: Option<u64>,
    /// Only these hosts' certificates
    #[arg(long, value_delimiter = ',', value_name = "NAME")]
    pub only: Vec<String>,
    /// List the certificates and the order of restarts; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Rotate the Kubernetes, etcd and front-proxy CAs: the next of three
    /// steps (new CAs trusted beside the old; every leaf from the new; the
    /// old dropped)
    #[arg(long, conflicts_with_all = ["expiring_within", "only"])]
    pub ca: bool,
    /// With --ca: every remaining step in one go
    #[arg(long, requires = "ca")]
    pub all: bool,
    /// With --ca, when a rotation starts: the service-account signing key
    /// too
    #[arg(long, requires = "ca")]
    pub sa: bool,
}

/// `30d`, `12h`, `90m`, `45s`, `2w` as seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: give a unit (s, m, h, d or w), e.g. 30d"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number then a unit, e.g. 30d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use s, m, h, d or w"
            ))
        }
    };
    number
        .checked_mul(scale)
        .filter(|seconds| *seconds <= 100 * 365 * 86_400)
        .ok_or_else(|| format!("{text:?}: too long"))
}

#[derive(Debug, Subcommand)]
pub enum EtcdCommand {
    /// Take a consistent snapshot on a healthy member and copy it here
    Snapshot(SnapshotArgs),
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Where to write it (default: backups/ beside the PKI store, named by
    /// cluster, time and revision)
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// How many snapshots of this cluster to keep in the default folder
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: u32,
}

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// The identity: admin or super-admin
    #[arg(long, default_value = "admin")]
    pub user: String,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}
