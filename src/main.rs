//! The `assay` command line; everything else is in the library.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use assay::config::{Config, Sources};

#[derive(Parser)]
#[command(
    name = "assay",
    version,
    about = "Proves that Stripe billing events turn into customer access"
)]
struct Cli {
    /// TOML configuration file; ASSAY_* variables override it.
    #[arg(long, global = true, env = "ASSAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server and the sweeper; applies migrations on start.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Load and validate the configuration, print it with secrets redacted.
    CheckConfig,
}

fn init_logging() {
    let filter = EnvFilter::try_from_env("ASSAY_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never into log files.
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var("ASSAY_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
    token.cancel();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = match Config::load(Sources {
        file: cli.config.as_deref(),
        env: &env,
    }) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("assay: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::CheckConfig => {
            print!("{}", config.redacted());
            Ok(())
        }
        Command::Migrate => assay::store::connect(&config.database)
            .await
            .map(|_| eprintln!("assay: migrations applied"))
            .map_err(anyhow::Error::from),
        Command::Serve => match tokio::net::TcpListener::bind(config.bind).await {
            Err(e) => Err(anyhow::anyhow!("cannot listen on {}: {e}", config.bind)),
            Ok(listener) => {
                let token = CancellationToken::new();
                tokio::spawn(shutdown_signal(token.clone()));
                assay::server::serve(config, listener, token).await
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("assay: {e:#}");
            ExitCode::FAILURE
        }
    }
}
