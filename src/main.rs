use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    let cli = ocfk8s::cli::Cli::parse();
    if cli.global.timings {
        ocfk8s::timings::enable(started);
    }
    let result = ocfk8s::run(cli);
    if let Some(report) = ocfk8s::timings::report() {
        eprint!("{report}");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = ocfk8s::error::exit_code(&error);
            if code != 3 {
                eprintln!("error: {error:#}");
            }
            ExitCode::from(code as u8)
        }
    }
}
