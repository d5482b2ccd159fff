//! The `assay` command line; everything else is in the library.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use assay::config::{Config, Sources};

#[derive(Parser)]
#[command(
    name = "assay",
    version,
    about = "Proves that Stripe billing events turn into customer access",
    long_about = "Proves that Stripe billing events turn into customer access.\n\n\
        Each accepted Stripe event opens a run that must reach `reconciled`, then \
        `access_asserted`, before its deadlines; the app reports stages through its SDK \
        and Assay probes the app's access itself. A missed deadline opens an incident \
        that is alerted to Slack, email or a signed webhook.",
    after_help = "Settings: ASSAY_* variables over a TOML file (--config) over the built-in \
        defaults; `assay check-config` shows them. Documentation: README.md in Assay's \
        repository (quickstart, configuration, HTTP API, incident evidence)."
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
    /// Run Assay: the HTTP API, the dashboard, the sweeper, the prober, the
    /// alert sender and the drill runner, in one process.
    ///
    /// Applies the database's migrations first, then says on standard error
    /// what is configured and what is missing (a webhook secret, an API key,
    /// a dashboard sign-in, an alert channel). Stops on SIGTERM or Ctrl-C
    /// after the requests and work in flight are done.
    Serve,
    /// Apply the database's migrations and exit.
    Migrate,
    /// Check the configuration: print the settings in effect, secrets
    /// redacted, and warn of what is missing.
    ///
    /// Every problem is listed at once, each naming its variable and file
    /// key; exits 2 if the settings do not load. Warnings (a setting
    /// missing, a placeholder value, an ASSAY_* variable Assay does not
    /// read) go to standard error; with --strict they exit 1.
    CheckConfig {
        /// Exit 1 on any warning, as a deploy pipeline's check.
        #[arg(long)]
        strict: bool,
    },
    /// Failure drills: prove, in staging, that the alarm rings.
    ///
    /// A drill sends a signed test-mode Stripe event through the webhook
    /// path, lets its run miss its deadline, and checks that the incident
    /// opens with its evidence and that its alert is delivered; then it
    /// resolves what it opened. Drill runs and incidents never count as a
    /// customer's.
    Drill {
        #[command(subcommand)]
        command: DrillCommand,
    },
    /// Scoped API keys: several per project, each with its scopes.
    ///
    /// `report` opens runs and reports stages (what the app's SDK needs),
    /// `read` reads runs, incidents and drills, `operate` acknowledges and
    /// resolves incidents and starts drills, `admin` manages keys and reads
    /// the audit log. A key is shown once, when made; only its SHA-256 is
    /// kept. ASSAY_API_KEY keeps working, with every scope.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a key and print it (on standard output, alone): keep it now.
    Create {
        /// The key's project; needed when there are several.
        #[arg(long)]
        project: Option<String>,
        /// What the key is for, such as `billing-app`.
        #[arg(long)]
        name: String,
        /// A scope it has: report, read, operate or admin; repeat for more.
        #[arg(long = "scope", required = true)]
        scopes: Vec<assay::access::Scope>,
        /// How long it works, such as `90d`; unset: until revoked.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
        /// An `ak_test_` key (for staging) rather than `ak_live_`.
        #[arg(long)]
        test: bool,
    },
    /// List a project's keys: id, prefix, name, scopes, state, last use.
    List {
        #[arg(long)]
        project: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key, by its id or its prefix; it stops working at once.
    Revoke {
        #[arg(long)]
        project: Option<String>,
        /// The key's id or prefix (`ak_live_1a2b3c4d`).
        key: String,
    },
}

#[derive(Subcommand)]
enum DrillCommand {
    /// Run one failure drill end to end and print its report; exits 0 only
    /// if the incident fired as it should. Without --url, Assay runs in
    /// this process on a loopback port, on the configured database.
    Run {
        /// The project to drill (with --url, the API key's project).
        #[arg(long)]
        project: Option<String>,
        /// The workflow to drill.
        #[arg(long, default_value = assay::run::BILLING_WORKFLOW)]
        workflow: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// A running Assay to drill over its API, e.g. http://127.0.0.1:8080.
        #[arg(long, env = "ASSAY_URL")]
        url: Option<String>,
        /// The project's API key, for --url.
        #[arg(long, env = "ASSAY_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
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
    // Kept to the end of `main`: dropping it flushes the traces.
    let _telemetry = assay::telemetry::init(&|name| std::env::var(name).ok());
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
        Command::CheckConfig { strict } => {
            print!("{}", config.redacted());
            for warning in config.warnings() {
                eprintln!("assay: warning: {warning}");
            }
            if strict && !config.warnings().is_empty() {
                eprintln!(
                    "assay: {} warning(s), and --strict refuses them",
                    config.warnings().len()
                );
                return ExitCode::FAILURE;
            }
            Ok(())
        }
        Command::Keys { command } => match command {
            KeysCommand::Create {
                project,
                name,
                scopes,
                expires_in,
                test,
            } => assay::commands::keys::create(
                &config,
                assay::commands::keys::Create {
                    project: project.as_deref(),
                    name: &name,
                    scopes,
                    expires_in,
                    test,
                },
            )
            .await
            .map(|(key, secret)| {
                println!("{secret}");
                eprintln!(
                    "assay: key {} ({}) made for project `{}` with scopes {}; it is shown this once",
                    key.prefix,
                    key.name,
                    key.project,
                    assay::access::keys::scopes_text(&key.scopes)
                );
            }),
            KeysCommand::List { project, json } => {
                assay::commands::keys::list(&config, project.as_deref())
                    .await
                    .map(|keys| {
                        if json {
                            println!("{}", serde_json::to_string_pretty(&keys).unwrap_or_default());
                        } else {
                            print!("{}", assay::commands::keys::table(&keys));
                        }
                    })
            }
            KeysCommand::Revoke { project, key } => {
                assay::commands::keys::revoke(&config, project.as_deref(), &key)
                    .await
                    .map(|key| eprintln!("assay: key {} ({}) is revoked", key.prefix, key.name))
            }
        },
        Command::Migrate => assay::store::connect(&config.database)
            .await
            .map(|_| eprintln!("assay: migrations applied"))
            .map_err(anyhow::Error::from),
        Command::Drill {
            command:
                DrillCommand::Run {
                    project,
                    workflow,
                    json,
                    url,
                    api_key,
                },
        } => {
            let ran = match url {
                Some(url) => {
                    assay::drill::cli::remote(
                        &url,
                        api_key.as_deref(),
                        project.as_deref(),
                        &workflow,
                    )
                    .await
                }
                None => assay::drill::cli::in_process(config, project.as_deref(), &workflow).await,
            };
            return match ran {
                Ok(drill) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&drill).unwrap_or_default()
                        );
                    } else {
                        print!("{}", drill.render_text());
                    }
                    if drill.status == assay::drill::DrillStatus::Passed {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("assay: the drill could not run: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Serve => match tokio::net::TcpListener::bind(config.bind).await {
            Err(e) => Err(anyhow::anyhow!("cannot listen on {}: {e}", config.bind)),
            Ok(listener) => {
                eprintln!("{}", config.summary());
                for warning in config.warnings() {
                    tracing::warn!(%warning, "the configuration lacks something");
                }
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
