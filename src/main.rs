use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ocfk8s::cli::Cli::parse();
    match ocfk8s::run(cli) {
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
