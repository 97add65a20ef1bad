//! `kvbench-sim`: see the library documentation for the model.

use clap::Parser;

/// A simulated OpenAI-compatible LLM engine with a prefix-cache model and vLLM's metrics.
#[derive(Debug, Parser)]
#[command(name = "kvbench-sim", version)]
struct Cli {
    #[command(flatten)]
    args: kvbench_sim::ServeArgs,
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
    match kvbench_sim::serve_until_signal(Cli::parse().args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvbench-sim: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
