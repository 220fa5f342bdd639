//! ocfk8s: bootstrap and operate a bare-metal Kubernetes cluster from one
//! inventory file. The binary is a thin door over [`run`].

pub mod cli;
mod commands;
pub mod error;
pub mod input_file;
mod install;
pub mod inventory;
mod lock;
mod ops;
mod phase;
pub mod pki;
mod plan;
pub mod printer;
mod remote;
pub mod render;
#[cfg(test)]
mod test_support;
pub mod timings;
mod units;

use cli::{Cli, Command};
use printer::Printer;

/// Run one command line; the error's chain decides the exit status
/// ([`error::exit_code`]).
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli { global, command } = cli;
    let printer = Printer::new(global.verbose, global.quiet, global.no_progress);
    match command {
        Command::Init(args) => commands::init::run(&args, &printer),
        Command::Validate => commands::validate::run(&global, &printer),
        Command::Completions(args) => commands::completions::run(&args),
        Command::Pki(command) => commands::pki::run(&command, &global, &printer),
        Command::Certs(cli::CertsCommand::Check(args)) if args.remote => {
            commands::certs_remote::run(&global, &args, &printer)
        }
        Command::Certs(command) => commands::certs::run(&command, &global, &printer),
        Command::Render(args) => commands::render::run(&global, &args, &printer),
        Command::Plan(args) => commands::plan::run(&global, &args, &printer),
        Command::Bootstrap(args) => commands::bootstrap::run(&global, &args, &printer),
        Command::Status(args) => commands::status::run(&global, &args, &printer),
        Command::AddMaster(args) => commands::add_master::run(&global, &args, &printer),
        Command::AddWorker(args) => commands::add_worker::run(&global, &args, &printer),
        Command::RemoveMaster(args) => commands::remove_master::run(&global, &args, &printer),
        Command::RemoveWorker(args) => commands::remove_worker::run(&global, &args, &printer),
        Command::RotateCerts(args) => commands::rotate::run(&global, &args, &printer),
        Command::Etcd(cli::EtcdCommand::Snapshot(args)) => {
            commands::etcd::snapshot(&global, &args, &printer)
        }
        Command::Kubeconfig(args) => commands::kubeconfig::run(&args, &global, &printer),
    }
}
