//! `kvbench`: thin entry point over [`kvbench_coordinator::cli::run()`]: parse, tracing, run, exit code.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(
                |_| // The embedded agent's own warnings reach people as console lines (round
                // refused, telemetry notes, saturation): its log shows only errors here.
                tracing_subscriber::EnvFilter::new("warn,kvbench_agent=error"),
            ),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, never in a redirected log.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match kvbench_coordinator::cli::run(kvbench_coordinator::cli::Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kvbench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
