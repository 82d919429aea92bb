//! `airlock serve`: resolve the configuration (paths relative to the config
//! file), keys and tokens, then run the server. Also the offline helpers that
//! open the same store without a server (`audit verify --offline`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use airlock_providers::ValidatedConfig;
use anyhow::{bail, Context, Result};

/// The catalog `serve --dev` writes when its data dir has none.
pub const DEV_CONFIG: &str = include_str!("dev-config.toml");

/// Configuration with every path resolved.
pub struct Resolved {
    /// The configuration, provider keys checked by their kinds.
    pub config: ValidatedConfig,
    pub policy_text: Option<String>,
    /// The configuration file's folder.
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub database_url: String,
}

fn relative_to(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Reads and validates a configuration file, provider keys included, so a bad
/// key fails here (serve, policy test, offline commands) and not at first use.
pub fn resolve(config_path: &Path, data_dir_override: Option<&Path>) -> Result<Resolved> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read config {}", config_path.display()))?;
    let config = ValidatedConfig::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?;
    let base = config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = base.canonicalize().unwrap_or_else(|_| base.to_path_buf());
    let policy_text = match &config.server.policy {
        Some(p) => {
            let path = relative_to(&base, p);
            Some(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read policy file {}", path.display()))?,
            )
        }
        None => None,
    };
    let data_dir = match (data_dir_override, &config.server.data_dir) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(d)) => relative_to(&base, d),
        (None, None) => base.clone(),
    };
    let database_url = match &config.server.database {
        Some(url) => match url.strip_prefix("sqlite://") {
            Some(path) => format!("sqlite://{}", relative_to(&base, path).display()),
            None => url.clone(),
        },
        None => format!("sqlite://{}", data_dir.join("airlock.db").display()),
    };
    Ok(Resolved {
        config,
        config_dir: base,
        policy_text,
        data_dir,
        database_url,
    })
}

/// Options of `airlock serve`.
pub struct ServeArgs {
    pub config: Option<PathBuf>,
    pub dev: bool,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
}

fn init_logging(dev: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("AIRLOCK_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("AIRLOCK_LOG_FORMAT")
        .map(|f| f == "json")
        .unwrap_or(!dev);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs the server until Ctrl-C / SIGTERM.
pub fn serve(args: ServeArgs) -> Result<()> {
    let config_path = match (&args.config, args.dev) {
        (Some(p), _) => p.clone(),
        (None, true) => {
            let dir = args
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(".airlock-dev"));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create data dir {}", dir.display()))?;
            let path = dir.join("airlock.toml");
            if !path.exists() {
                std::fs::write(&path, DEV_CONFIG)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("wrote example catalog to {}", path.display());
            }
            path
        }
        (None, false) => {
            bail!("give --config FILE (or --dev for a local SQLite setup with an example catalog)")
        }
    };
    let resolved = resolve(
        &config_path,
        if args.dev {
            None
        } else {
            args.data_dir.as_deref()
        },
    )?;
    init_logging(args.dev);

    let mut admin_tokens = vec![];
    if let Ok(t) = std::env::var("AIRLOCK_BOOTSTRAP_TOKEN") {
        let t = t.trim().to_string();
        if t.len() < 16 {
            bail!("AIRLOCK_BOOTSTRAP_TOKEN is shorter than 16 characters; use a long random value");
        }
        admin_tokens.push(airlock_server::auth::hash_token(&t));
    }
    let dev_token = args.dev.then(airlock_server::auth::new_token);
    if let Some(t) = &dev_token {
        admin_tokens.push(airlock_server::auth::hash_token(t));
    }
    let listen = args
        .listen
        .clone()
        .unwrap_or_else(|| resolved.config.server.listen.clone());
    // Bind and open the store before the async runtime starts: the store
    // drivers are synchronous and must not block inside it.
    let listener = std::net::TcpListener::bind(&listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    // Unique per process: a restarted replica waits for its old leases to run out.
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let replica_id = format!("{host}:{addr}:{}", std::process::id());
    let app = airlock_server::App::new(airlock_server::ServeOptions {
        config: resolved.config,
        policy_text: resolved.policy_text,
        data_dir: resolved.data_dir.clone(),
        config_dir: resolved.config_dir.clone(),
        database_url: resolved.database_url.clone(),
        admin_token_hashes: admin_tokens,
        replica_id,
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    say_ready(addr, dev_token.as_deref(), &resolved.data_dir);
    tracing::info!(addr = %addr, database = %redact(&resolved.database_url), "airlock serving");
    let grace = Duration::from_secs(app.config.server.shutdown_grace.as_secs());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = runtime.block_on({
        let app = Arc::clone(&app);
        async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let svc = app.svc.clone();
            let server = airlock_server::app::run(app, listener, true, shutdown_signal());
            tokio::select! {
                r = server => r?,
                () = async { svc.stopped().await; tokio::time::sleep(grace).await } => {
                    tracing::warn!(grace_seconds = grace.as_secs(),
                        "shutdown_grace is over with work still open; exiting anyway \
                         (runs still executing are recorded as failed by the next replica)");
                }
            }
            Ok::<(), anyhow::Error>(())
        }
    });
    // Tasks still open are dropped here, while `app` keeps the store alive:
    // the PostgreSQL store's synchronous client must be dropped outside the
    // runtime (inside it, its destructor panics and the process aborts).
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(app);
    served?;
    tracing::info!("airlock stopped");
    Ok(())
}

fn say_ready(addr: std::net::SocketAddr, dev_token: Option<&str>, data_dir: &Path) {
    println!("airlock listening on http://{addr}");
    if let Some(t) = dev_token {
        println!("data dir: {}", data_dir.display());
        println!("admin token (this run only): {t}");
        println!("  export AIRLOCK_ADDR=http://{addr} AIRLOCK_TOKEN={t}");
        println!("  then: airlock token create --user alice");
        println!("web UI: http://{addr}/ui/signin (paste a token)");
    }
}

/// Hides a password in a database URL for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_config_parses() {
        ValidatedConfig::parse(DEV_CONFIG).unwrap();
    }

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
