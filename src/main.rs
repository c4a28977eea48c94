use claimgate::app::App;
use claimgate::config::{self, Config};
use claimgate::dev::{self, DevIssuer};
use claimgate::doors::explain::ExplainRequest;
use claimgate::reload::{Reloader, Source};
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::TcpListener;

/// A JWT-verifying reverse proxy: only requests with a valid token reach the upstream, carrying
/// trusted identity headers. SIGHUP (or POST /reload on the admin port) reloads the config file;
/// SIGTERM drains.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (YAML).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Run self-contained: built-in dev issuer and echo upstream; needs nothing external.
    #[arg(long, conflicts_with = "config")]
    dev: bool,
    /// Override the proxy listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Override the admin listen address.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file: prints `ok` (exit 0) or the file, key and reason (exit 2).
    Check,
    /// Print a claimgate config equivalent to an Atlas App Services app export (its custom JWT
    /// provider and custom user data); exit 2 with the file and key if the export is malformed.
    ImportAtlas {
        /// The export's root directory (the one holding `auth/`).
        dir: PathBuf,
    },
    /// Explain the decision for a token and route as JSON, forwarding nothing: exit 0 on allow,
    /// 1 on deny, 2 when the config or the arguments are wrong.
    Explain {
        /// The token (only its first 8 characters and SHA-256 are printed).
        #[arg(long)]
        token: String,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long, default_value = "/")]
        path: String,
        /// A request header, `Name:value`; repeatable.
        #[arg(long = "header", value_name = "K:V")]
        headers: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let explain_args = match cli.command {
        Some(Command::Check) => return check(cli.config),
        Some(Command::ImportAtlas { dir }) => return import_atlas(&dir),
        Some(Command::Explain {
            token,
            method,
            path,
            headers,
        }) => Some((token, method, path, headers)),
        None => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("claimgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some((token, method, path, headers)) = explain_args {
        return runtime.block_on(explain(cli.config, token, method, path, headers));
    }
    let mut current = None;
    let result = runtime.block_on(async {
        if cli.dev {
            run_dev(cli.listen, cli.admin_listen).await
        } else {
            let path = cli
                .config
                .ok_or("either --config FILE or --dev is required")?;
            let mut config = config::load_file(&path).map_err(|e| e.to_string())?;
            config.listen = cli.listen.unwrap_or(config.listen);
            config.admin.listen = cli.admin_listen.unwrap_or(config.admin.listen);
            let app = App::build(config, None).map_err(|e| e.in_file(&path).to_string())?;
            app.reloader.set_source(Source {
                path,
                listen: cli.listen,
                admin_listen: cli.admin_listen,
            });
            current = Some(app.current.clone());
            run(app).await
        }
    });
    // Outside the runtime: the exporter's flush blocks until the last batch is sent.
    // The exporter of the config in force at exit (a reload keeps it while `tracing` is unchanged).
    let telemetry = current.and_then(|c| c.load().decider.telemetry.clone());
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("claimgate: {message}");
            ExitCode::from(2)
        }
    }
}

fn check(path: Option<PathBuf>) -> ExitCode {
    let Some(path) = path else {
        eprintln!("claimgate check: --config FILE is required");
        return ExitCode::from(2);
    };
    let built =
        config::load_file(&path).and_then(|c| App::build(c, None).map_err(|e| e.in_file(&path)));
    match built {
        Ok(_) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn import_atlas(dir: &std::path::Path) -> ExitCode {
    match claimgate::atlas_import::import(dir) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("claimgate import-atlas: {e}");
            ExitCode::from(2)
        }
    }
}

/// `claimgate explain`: builds the app as `check` does, loads each JWKS once, and asks the
/// explain door. User data is read only if its source answers within its timeout.
async fn explain(
    path: Option<PathBuf>,
    token: String,
    method: String,
    route: String,
    header_args: Vec<String>,
) -> ExitCode {
    let fail = |message: String| {
        eprintln!("claimgate explain: {message}");
        ExitCode::from(2)
    };
    let Some(path) = path else {
        return fail("--config FILE is required".into());
    };
    let mut headers = std::collections::BTreeMap::new();
    for header in header_args {
        let Some((name, value)) = header.split_once(':') else {
            return fail(format!("--header {header:?}: expected Name:value"));
        };
        headers.insert(name.trim().to_owned(), value.trim().to_owned());
    }
    let built =
        config::load_file(&path).and_then(|c| App::build(c, None).map_err(|e| e.in_file(&path)));
    let app = match built {
        Ok(app) => app,
        Err(e) => return fail(e.to_string()),
    };
    for store in &app.key_stores {
        if store.keys().is_none() {
            if let Err(why) = store.refresh().await {
                eprintln!("claimgate explain: provider {}: {why}", store.provider());
            }
        }
    }
    // The revocation list is followed as the proxy does, and waited for a few seconds: until it
    // is read, a token with a `jti` is judged `revocation_unavailable`, as the proxy would.
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(revocation) = &app.decider.revocation {
        tokio::spawn(revocation.clone().run(stop_rx));
        for _ in 0..50 {
            if revocation.is_ready() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let request = ExplainRequest {
        token,
        method: Some(method),
        path: Some(route),
        headers,
    };
    match claimgate::doors::explain::explain(&app.decider, &request).await {
        Ok(answer) => {
            println!("{answer:#}");
            if answer["decision"] == "allow" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(why) => fail(why),
    }
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
}

/// The proxy port, shared by one socket per worker (`SO_REUSEPORT`).
async fn bind_proxy(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    claimgate::server::reuse_port::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
}

async fn run(app: App) -> Result<(), String> {
    let proxy = bind_proxy(app.config.listen, "listen").await?;
    let admin = bind(app.config.admin.listen, "admin.listen").await?;
    let grpc = match app.grpc_listen() {
        Some(addr) => Some(bind(addr, "forward_auth.grpc_listen").await?),
        None => None,
    };
    let upstream = app.config.upstream.as_ref().map_or("-", |u| u.url.as_str());
    let grpc_listen = app.grpc_listen().map_or("-".to_owned(), |a| a.to_string());
    tracing::info!(listen = %app.config.listen, admin = %app.config.admin.listen, grpc_listen, mode = ?app.config.mode, upstream, "claimgate started");
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(app.reloader.clone()));
    app.run(proxy, admin, grpc, drain_signal()).await;
    Ok(())
}

async fn run_dev(
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
) -> Result<(), String> {
    let listen = listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
    let proxy_listener = bind_proxy(listen, "--dev proxy").await?;
    let admin_listener = bind(
        admin_listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9901))),
        "--dev admin",
    )
    .await?;
    let echo_listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)), "--dev echo upstream").await?;
    let (admin_addr, echo_addr) = (
        admin_listener.local_addr().map_err(|e| e.to_string())?,
        echo_listener.local_addr().map_err(|e| e.to_string())?,
    );
    let proxy_addr = proxy_listener.local_addr().map_err(|e| e.to_string())?;
    let issuer = DevIssuer::generate(admin_addr)?;
    let token = issuer.mint(&[
        ("sub".into(), "alice".into()),
        ("name".into(), "Alice".into()),
    ])?;
    let users_file = dev::write_users_file()?;
    let users_dir = users_file.parent().map(std::path::Path::to_owned);
    let config: Config = dev::config(proxy_addr, admin_addr, echo_addr, &users_file, &issuer);
    let app = App::build(config, Some(issuer))
        .map_err(|e| format!("dev config: {}: {}", e.key, e.reason))?;
    let stores = app.key_stores.clone();
    tokio::spawn(claimgate::echo::serve_echo(
        echo_listener,
        std::future::pending::<()>(),
    ));
    tokio::spawn(async move {
        for _ in 0..100 {
            if stores.iter().all(|s| s.is_ready()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "claimgate --dev: proxy http://{proxy_addr} -> built-in echo upstream; admin http://{admin_addr}\n\
             Try it:\n  curl -H 'Authorization: Bearer {token}' http://{proxy_addr}/hello\n\
             Mint more: curl 'http://{admin_addr}/dev/token?sub=alice&name=Alice'\n\
             Custom user data (live, edit it): {}\n\
             Who am I: curl -H 'Authorization: Bearer {token}' http://{proxy_addr}/.claimgate/userinfo",
            users_file.display()
        );
    });
    app.run(proxy_listener, admin_listener, None, drain_signal())
        .await;
    if let Some(dir) = users_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

/// Each SIGHUP re-reads the config file (the outcome is logged and counted by the reloader).
#[cfg(unix)]
async fn reload_on_sighup(reloader: std::sync::Arc<Reloader>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(hup) => hup,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with POST /reload");
            return;
        }
    };
    while hup.recv().await.is_some() {
        let _ = reloader.reload().await;
    }
}

/// The first SIGTERM/SIGINT starts the drain (see `claimgate::drain`); a second one exits at
/// once, for an operator who does not want to wait.
async fn drain_signal() {
    shutdown_signal().await;
    tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("claimgate: second signal: exiting without finishing the drain");
        std::process::exit(1);
    });
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn init_logging(format: LogFormat) {
    claimgate::access_log::set_json_format(matches!(format, LogFormat::Json));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
