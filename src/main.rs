//! The `tollgate` command: `run` a gateway, `check` a config file, print the config `schema`, or
//! start the `demo`.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use tollgate::config::{self, ConfigErrors, Diagnostic};
use tollgate::observe::{init_logging, AccessLog};
use tollgate::server::{Instance, Launch, DEFAULT_UPGRADE_SOCK};
use tollgate::snapshot::Snapshot;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "An API gateway for mobile backends, built on Pingora"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve traffic with the given config; reloads on file change and SIGHUP.
    Run {
        /// Config file (TOML).
        #[arg(short, long, default_value = "/etc/tollgate/tollgate.toml")]
        config: PathBuf,
        /// Zero-downtime upgrade: take the listening sockets over from the Tollgate running
        /// now instead of binding them. Start this, then send SIGQUIT to the old process: it
        /// hands its sockets over through --upgrade-sock and drains. Exits 1 if no sockets
        /// came within a few seconds.
        #[arg(long)]
        upgrade: bool,
        /// Unix socket for the handover; the old and the new process need the same one.
        #[arg(long, default_value = DEFAULT_UPGRADE_SOCK)]
        upgrade_sock: PathBuf,
    },
    /// Validate a config file, like `nginx -t`: exit 0 with a summary (and any warnings on
    /// stderr), or 1 with every error.
    Check {
        #[arg(short, long, default_value = "/etc/tollgate/tollgate.toml")]
        config: PathBuf,
        /// `json`: every error and warning as a JSON object on stdout (file, path, line,
        /// column, message, severity), for CI annotations. Same exit codes.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print the JSON Schema of the config file, for editors with TOML schema support (the
    /// repository ships it as config/tollgate.schema.json).
    Schema,
    /// Run the gateway on the demo config together with demo backends on 127.0.0.1:9001-9003.
    Demo {
        #[arg(short, long, default_value = "config/demo.toml")]
        config: PathBuf,
    },
    /// Run only the demo backends (127.0.0.1:9001-9003), to stop and start them while a
    /// gateway runs on config/demo.toml (`run -c config/demo.toml`): failures made visible.
    DemoBackends,
}

/// How `check` reports.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { config, format } => check(&config, format),
        Command::Schema => {
            print!("{}", config::schema::schema_text());
            ExitCode::SUCCESS
        }
        Command::Run {
            config,
            upgrade,
            upgrade_sock,
        } => run(
            &config,
            &Launch {
                upgrade,
                upgrade_sock,
            },
            false,
        ),
        Command::Demo { config } => run(&config, &Launch::default(), true),
        Command::DemoBackends => demo_backends(),
    }
}

fn demo_backends() -> ExitCode {
    let server = tollgate::demo::backends_server();
    eprintln!("demo backends on 127.0.0.1:9001-9003; Ctrl-C stops them");
    server.run(pingora::server::RunArgs::default());
    ExitCode::SUCCESS
}

fn check(path: &std::path::Path, format: Format) -> ExitCode {
    let loaded = Snapshot::load(path);
    if format == Format::Json {
        let (diagnostics, code) = match &loaded {
            Ok(s) => (
                Diagnostic::warnings(&s.info.source.display().to_string(), &s.warnings),
                ExitCode::SUCCESS,
            ),
            Err(errors) => (Diagnostic::errors(errors), ExitCode::FAILURE),
        };
        print!("{}", Diagnostic::to_json(&diagnostics));
        return code;
    }
    match loaded {
        Ok(s) => {
            // Warnings do not fail the check: the config would load and serve as it is.
            for line in s.warning_lines() {
                eprintln!("{line}");
            }
            println!(
                "{}: ok ({}, {})",
                path.display(),
                count(s.info.routes, "route"),
                count(s.info.upstreams, "upstream")
            );
            ExitCode::SUCCESS
        }
        Err(errors) => report(&errors),
    }
}

fn report(errors: &ConfigErrors) -> ExitCode {
    eprintln!("{errors}");
    eprintln!("{}: {}", errors.source, count(errors.errors.len(), "error"));
    ExitCode::FAILURE
}

/// "1 route", "3 routes".
fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

fn run(path: &std::path::Path, launch: &Launch, demo: bool) -> ExitCode {
    // SIGHUP's default action kills the process; until the reload service listens for it, a
    // reload request (say, from a deploy script racing the start) must not do that. The reload
    // service also reloads once when it starts, so nothing is lost.
    let early_hangup = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, early_hangup) {
        eprintln!("warning: cannot guard SIGHUP during start-up: {e}");
    }
    // The log settings are needed before anything else can be reported.
    let (log_format, log_level) = match config::load(path) {
        Ok((_, cfg)) => (cfg.log.format, cfg.log.level),
        Err(errors) => return report(&errors),
    };
    init_logging(log_format, &log_level);
    let mut instance = match Instance::build_with(path, AccessLog::stdout(), launch) {
        Ok(i) => i,
        Err(errors) => return report(&errors),
    };
    if demo {
        for service in tollgate::demo::backend_services() {
            instance.add_service(service);
        }
    }
    let snap = instance.store.snapshot();
    tracing::info!(
        config = %path.display(),
        config_hash = %snap.info.hash,
        routes = snap.info.routes,
        upstreams = snap.info.upstreams,
        listen = ?snap.server.listen,
        admin = ?snap.server.admin_listen,
        version = env!("CARGO_PKG_VERSION"),
        upgrade = launch.upgrade,
        "tollgate starting"
    );
    if demo {
        match &snap.server.admin_listen {
            Some(admin) => eprintln!("status page: http://{admin}/"),
            None => eprintln!("no server.admin_listen: no status page"),
        }
    }
    drop(snap);
    let signals = instance.process_signals();
    instance.run(signals);
    ExitCode::SUCCESS
}
