//! `metaportrait` binary: parses the command line, sets up logging, and reports errors at the edge.

mod cli;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("METAPORTRAIT_LOG").unwrap_or_else(|_| EnvFilter::new("info,ort=warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match cli::run(cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
