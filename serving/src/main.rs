//! `leadscore-serve`: serves the models of a registry directory over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use serving::{AppState, ModelSet, PoolConfig, app, runtime};

/// Serve lead-scoring models over HTTP.
#[derive(Debug, Parser)]
#[command(name = "leadscore-serve", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "LEADSCORE_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Registry directory; every `<task>/<version>/model.onnx` in it is served
    /// as the model `<task>/<version>`.
    #[arg(long, env = "LEADSCORE_REGISTRY", default_value = "registry/")]
    registry: PathBuf,
    /// ONNX Runtime sessions per model (default: available cores).
    #[arg(long)]
    sessions: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("leadscore-serve: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}`: the whole cause chain on one line, no backtrace.
            eprintln!("leadscore-serve: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Without the runtime the service can never become ready: fail fast.
    let rt = runtime::runtime()?;
    eprintln!(
        "leadscore-serve: ONNX Runtime {} from {}",
        runtime::ORT_VERSION,
        rt.library().display()
    );

    let mut config = PoolConfig::default();
    if let Some(n) = args.sessions {
        config.sessions = n;
    }

    let state = AppState::not_ready(format!("loading models from {}", args.registry.display()));
    // Load in the background so /healthz and /readyz answer meanwhile.
    {
        let state = state.clone();
        let registry = args.registry.clone();
        tokio::task::spawn_blocking(move || match ModelSet::load_dir(&registry, config) {
            Ok(models) if models.is_empty() => {
                let reason = format!("no <task>/<version>/model.onnx in {}", registry.display());
                eprintln!("leadscore-serve: {reason}");
                state.set_not_ready(reason);
            }
            Ok(models) => {
                eprintln!("leadscore-serve: loaded models {models:?}");
                state.set_models(models);
            }
            Err(e) => {
                eprintln!("leadscore-serve: {e}");
                state.set_not_ready(e.to_string());
            }
        });
    }

    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    eprintln!("leadscore-serve: listening on {}", listener.local_addr()?);
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    eprintln!("leadscore-serve: stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("leadscore-serve: cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                eprintln!("leadscore-serve: cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    eprintln!("leadscore-serve: shutting down");
}
