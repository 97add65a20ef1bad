//! `kvbench`: thin entry point over [`kvbench_coordinator::run`].

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match kvbench_coordinator::run(kvbench_coordinator::Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kvbench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
