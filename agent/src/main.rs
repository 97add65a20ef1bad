//! `kvbench-agent`: serves the agent protocol next to one engine.

use clap::Parser;

/// kvbench's agent: generates load against the local engine on the coordinator's command.
#[derive(Debug, Parser)]
#[command(name = "kvbench-agent", version)]
struct Cli {
    #[command(flatten)]
    args: kvbench_agent::ServeArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, never in a redirected log.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match kvbench_agent::serve_until_signal(Cli::parse().args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvbench-agent: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
