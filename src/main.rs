//! The `maxine` program: `maxine serve` runs the server; the other
//! subcommands (in `cli`) are small clients of a running server, for people.

mod cli;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal as unix_signal};
use tokio_util::sync::CancellationToken;

use cli::{
    Cli, Command, ServeArgs, acl, api, audit, blacklist, intention, kv, lookup, snapshot, tls,
};
use maxine::app::{App, Listeners, Notifier};
use maxine::config::{Config, LogFormat};
use maxine::telemetry::RecentLogs;

/// The server's allocator: docs/adr/0004-mimalloc-allocator.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The message and its causes, for people: no Debug dump, no
            // backtrace (even with RUST_BACKTRACE set).
            eprintln!("maxine: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    // No transparent huge pages for this process: a huge-page fault zeroes
    // 2 MiB inside whatever allocation first touches a fresh region, on the
    // request path, and set the p99 of registrations (ADR 0004).
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("maxine: cannot turn transparent huge pages off ({e}); going on with them");
    }
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve(args) => rt.block_on(serve(args)),
        Command::Register(args) => rt.block_on(api::register(args)),
        Command::Deregister(args) => rt.block_on(api::deregister(args)),
        Command::Services(args) => rt.block_on(api::services(args)),
        Command::Lookup(args) => rt.block_on(lookup::lookup(args)),
        Command::Snapshot(snapshot::SnapshotCommand::Save(args)) => {
            rt.block_on(snapshot::save(args))
        }
        Command::Snapshot(snapshot::SnapshotCommand::Restore(args)) => snapshot::restore(args),
        Command::Acl(cmd) => rt.block_on(acl::run(cmd)),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Kv(cmd) => rt.block_on(kv::run(cmd)),
        Command::Intention(cmd) => rt.block_on(intention::run(cmd)),
        Command::Blacklist(cmd) => rt.block_on(blacklist::run(cmd)),
        Command::Watch(args) => rt.block_on(kv::watch(args)),
        Command::Tls(cmd) => tls::run(cmd),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    // The last lines of the log, for the operators' `/api/logs` routes.
    let recent = RecentLogs::new(maxine::telemetry::recent::DEFAULT_LINES);
    // The exporter's HTTP client blocks: made (and shut down) off the runtime.
    let traces = match config.telemetry.otlp_endpoint.clone() {
        Some(url) => {
            let every = config.telemetry.otlp_export_interval;
            Some(
                tokio::task::spawn_blocking(move || {
                    maxine::telemetry::traces::Traces::new(&url, every)
                })
                .await?
                .context("cannot set up the OTLP span exporter")?,
            )
        }
        None => None,
    };
    init_logging(&config, &recent, traces.as_ref())?;
    let listeners = Listeners::bind(config.dns.addr, config.http.addr)?;
    let app = App::build(config, listeners)?
        .with_recent_logs(recent)
        .with_notifier(Notifier::new(std::env::var_os("NOTIFY_SOCKET")));
    let shutdown = CancellationToken::new();
    let skip_drain = CancellationToken::new();
    let (signal, skip) = (shutdown.clone(), skip_drain.clone());
    // Installed here, before the server says it is serving: a SIGTERM sent
    // right after that line must drain, not kill with the default action.
    let mut term = unix_signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = unix_signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::spawn(async move {
        // SIGTERM (a service manager, an orchestrator) drains first;
        // SIGINT (Ctrl-C at a terminal), or a second signal, does not wait.
        tokio::select! {
            _ = int.recv() => skip.cancel(),
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        signal.cancel();
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        skip.cancel();
    });
    let ran = app.run_draining(shutdown, skip_drain).await;
    if let Some(t) = traces {
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
    }
    ran
}

/// The log (on stdout), and the same lines into `recent`, under one
/// filter; and the span exporter's layer when tracing is on.
fn init_logging(
    config: &Config,
    recent: &RecentLogs,
    traces: Option<&maxine::telemetry::traces::Traces>,
) -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .with_context(|| format!("invalid log level {:?}", config.log.level))?;
    // A log line that cannot be written (stdout on a full disk) is lost,
    // never a panic in whatever thread logged it.
    // Colour codes only on a terminal, and never with NO_COLOR.
    let ansi = cli::log_colours(
        std::env::var_os("NO_COLOR").as_deref(),
        std::io::IsTerminal::is_terminal(&std::io::stderr())
            && std::io::IsTerminal::is_terminal(&std::io::stdout()),
    );
    let json = (config.log.format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_ansi(ansi)
            .log_internal_errors(false)
    });
    let text = (config.log.format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .log_internal_errors(false)
    });
    // The filter is the log's; spans are exported by a layer of their own
    // (with tracing off there is none).
    use tracing_subscriber::Layer;
    let logs = Layer::and_then(Layer::and_then(json, text), recent.layer()).with_filter(filter);
    tracing_subscriber::registry()
        .with(traces.map(|t| t.layer()))
        .with(logs)
        .try_init()
        .context("cannot install the logger")?;
    Ok(())
}
