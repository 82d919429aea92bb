//! `airlock`: one binary for the server (`serve`) and every client command.
//! Client commands talk to `AIRLOCK_ADDR` with `AIRLOCK_TOKEN`; every command
//! takes `--output json`. Exit 0 on success, 1 when refused or failed, 2 on usage errors.

/// Prints a line to stdout; a closed pipe (`| head`) ends the process quietly
/// instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

mod access;
mod client;
mod config_check;
mod connect;
mod docs;
mod doctor;
mod init;
mod login;
mod offline;
mod output;
mod proxy;
mod serve;
mod tlog;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use airlock_api::requests::RequestView;
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use client::Client;

#[derive(Parser)]
#[command(
    name = "airlock",
    version,
    about = "Zero Touch Production: just-in-time, approved, audited access"
)]
struct Cli {
    /// Server address.
    #[arg(
        long,
        env = "AIRLOCK_ADDR",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    addr: String,
    /// API token.
    #[arg(long, env = "AIRLOCK_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Output format (default from AIRLOCK_OUTPUT, else text).
    #[arg(long, short = 'o', value_enum, env = "AIRLOCK_OUTPUT", default_value_t = Output::Text, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Option<Command>,
}

/// What `airlock` alone prints: the few commands most people need.
const GUIDE: &str = "\
airlock: just-in-time, approved, audited access to production.

  airlock login                                  sign in (or set AIRLOCK_TOKEN)
  airlock entitlements                           what you may ask for
  airlock request ENT --for 30m --reason \"…\"     ask; add --wait to follow it
  airlock status                                 your grants, and what waits for you
  airlock review ID --approve | --deny           decide on someone else's request
  airlock credentials ID                         use an active grant
  airlock exec -- TOOL ARGS…                     run a catalog tool on the server

Server: airlock serve --dev (local SQLite, example catalog).
Everything else: airlock --help, airlock COMMAND --help, man airlock.";

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

/// Shells `airlock completions` writes a script for.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented starter airlock.toml, policy.cedar and policy-tests.toml into DIR.
    Init {
        /// Where to write them (created if missing; existing files are never overwritten).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Provider sections to include: postgres, ssh (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "postgres,ssh")]
        provider: Vec<String>,
    },
    /// Configuration commands: `airlock config check FILE`.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Check that each provider answers and that airlock holds every privilege it needs there.
    Doctor {
        /// Configuration file (TOML).
        #[arg(long, env = "AIRLOCK_CONFIG")]
        config: PathBuf,
    },
    /// Print a shell completion script: `source <(airlock completions bash)`.
    Completions { shell: Shell },
    /// Write man pages (airlock.1 and one per subcommand) into DIR, for packages.
    Man { dir: PathBuf },
    /// Run the server.
    Serve {
        /// Configuration file (TOML).
        #[arg(long, env = "AIRLOCK_CONFIG")]
        config: Option<PathBuf>,
        /// Local development: SQLite in --data-dir, example catalog, printed admin token.
        #[arg(long)]
        dev: bool,
        /// Data directory (default with --dev: ./.airlock-dev).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Override `[server] listen`.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Request an entitlement for a bounded time.
    Request {
        entitlement: String,
        /// Duration, e.g. 30m.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// Start the grant then instead of on approval: RFC 3339
        /// (2026-12-03T09:00:00Z) or +DURATION from now (+2h); it can be
        /// reviewed at once, and `--for` counts from the start.
        #[arg(long, value_name = "TIME")]
        start: Option<String>,
        /// Wait until the request is active, denied or lapsed.
        #[arg(long)]
        wait: bool,
    },
    /// Self-activate a break-glass entitlement (loud; reviewed afterwards).
    Breakglass {
        entitlement: String,
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        #[arg(long)]
        reason: String,
        /// Wait until the grant is active.
        #[arg(long)]
        wait: bool,
    },
    /// Approve or deny a request.
    Review {
        id: String,
        #[arg(long, conflicts_with = "deny", required_unless_present = "deny")]
        approve: bool,
        #[arg(long)]
        deny: bool,
        #[arg(long)]
        comment: Option<String>,
    },
    /// My active grants with time left, requests waiting for my review, and
    /// open post-incident reviews.
    Status,
    /// Show one request.
    Show { id: String },
    /// List requests.
    List {
        #[arg(long)]
        state: Option<String>,
        /// Only my requests.
        #[arg(long)]
        mine: bool,
        /// Pending requests I may review.
        #[arg(long)]
        to_review: bool,
    },
    /// Withdraw a pending request (requester).
    Withdraw { id: String },
    /// End an active grant now (requester, reviewer or admin).
    Revoke {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Credentials of an active grant (requester only).
    Credentials {
        id: String,
        /// SSH grants: certify this public key; prints the certificate line only
        /// (`airlock credentials ID --public-key k.pub > k-cert.pub`).
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
    /// Tunnel to an active grant through the server's gateway, which holds
    /// the credential: a local listener (each connection is one recorded
    /// session), `--stdio` for ssh's ProxyCommand, or `-- CMD ARGS…` run with
    /// PGHOST/PGPORT/PGDATABASE (PostgreSQL) or AIRLOCK_CONNECT_ADDR set.
    Connect {
        id: String,
        /// Local address to listen on (default: a free loopback port).
        #[arg(long, value_name = "ADDR", conflicts_with = "stdio")]
        listen: Option<String>,
        /// Relay one session over stdin/stdout.
        #[arg(long)]
        stdio: bool,
        /// A command to run against the listener; exits with its status.
        #[arg(last = true, value_name = "CMD ARG", conflicts_with = "stdio")]
        command: Vec<String>,
    },
    /// Gateway sessions (list, events, terminate).
    Session {
        #[command(subcommand)]
        command: connect::SessionCommand,
    },
    /// SSH certificate authority of a provider.
    Ssh {
        #[command(subcommand)]
        command: SshCommand,
    },
    /// Access on targets that no grant backs, and standing access outside airlock (admins).
    Drift {
        /// Only this provider.
        #[arg(long)]
        provider: Option<String>,
    },
    /// Entitlements in the catalog.
    Entitlements,
    /// Who the token belongs to.
    Whoami,
    /// Log in through the OpenID Connect provider (device code); keeps the
    /// session token in ~/.config/airlock/token (0600), used when AIRLOCK_TOKEN is unset.
    Login,
    /// Revoke the saved login token on the server and delete it.
    Logout,
    /// Audit log commands.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Policy commands.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Run a command through the tool proxy: `airlock exec [--reason R] [--no-wait] -- TOOL ARG…`.
    Exec {
        #[arg(long, default_value = "")]
        reason: String,
        /// Do not wait for approval or stream the output; print the run and return.
        #[arg(long)]
        no_wait: bool,
        /// The tool and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "TOOL ARG")]
        command: Vec<String>,
    },
    /// Catalog operations (list, run).
    Operation {
        #[command(subcommand)]
        command: proxy::OperationCommand,
    },
    /// Runs of the tool proxy (show, list, transcript, follow, cancel).
    Run {
        #[command(subcommand)]
        command: proxy::RunCommand,
    },
    /// Token commands (admin).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Lock a user or an entitlement: revokes active grants, cancels pending
    /// requests and runs, refuses tokens (admin). `airlock lock list` shows locks.
    Lock {
        #[command(subcommand)]
        command: access::LockCommand,
    },
    /// Lift a lock (admin).
    Unlock {
        #[command(subcommand)]
        command: access::UnlockCommand,
    },
    /// User commands (admin).
    User {
        #[command(subcommand)]
        command: access::UserCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain, the Merkle tree and every due signed checkpoint.
    Verify {
        /// Read the database named in --config directly; no server needed.
        #[arg(long, requires = "config")]
        offline: bool,
        #[arg(long, env = "AIRLOCK_CONFIG")]
        config: Option<PathBuf>,
        /// Also prove the log only grew since this saved checkpoint (`audit checkpoint > FILE`).
        #[arg(long, value_name = "FILE")]
        since: Option<PathBuf>,
        /// Check checkpoints with this verifier key (as printed by `audit pubkey`) instead of the server's.
        #[arg(long, value_name = "VERIFIER_KEY")]
        key: Option<String>,
    },
    /// Print the latest signed checkpoint (a C2SP tlog-checkpoint note); save it to check later.
    Checkpoint,
    /// Prove that event SEQ is in the log's latest signed checkpoint.
    Prove {
        seq: u64,
        /// Check this saved proof (`audit prove SEQ -o json > FILE`) instead of fetching one.
        #[arg(long, value_name = "FILE")]
        proof: Option<PathBuf>,
        /// Check the checkpoint with this verifier key instead of the server's.
        #[arg(long, value_name = "VERIFIER_KEY")]
        key: Option<String>,
    },
    /// Print events as JSON Lines.
    Export {
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        since: u64,
        #[arg(long, requires = "config")]
        offline: bool,
        #[arg(long, env = "AIRLOCK_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the checkpoint signing public key.
    Pubkey {
        #[arg(long, requires = "config")]
        offline: bool,
        #[arg(long, env = "AIRLOCK_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate FILE as `serve` would and print a summary (entitlements, who
    /// may request and review each, providers); exit 1 listing every problem.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum SshCommand {
    /// Write the KRL (OpenSSH binary format) for sshd's RevokedKeys to stdout.
    Krl { provider: String },
    /// Print the CA public key for sshd's TrustedUserCAKeys.
    CaKey { provider: String },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run policy test cases (TOML) against the catalog and Cedar policies.
    Test {
        file: PathBuf,
        #[arg(long, env = "AIRLOCK_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token for a user.
    Create {
        #[arg(long)]
        user: String,
        /// Extra groups, comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Lifetime, e.g. 30d.
        #[arg(long, default_value = "30d")]
        ttl: String,
        /// Make it an admin token.
        #[arg(long)]
        admin: bool,
    },
    /// List live tokens (prefix, user, created, expires, last used; never the secret).
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke one token by prefix, or every token of a user; their web sessions end too.
    Revoke {
        /// Hex prefix from `airlock token list` (at least 8 digits).
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        prefix: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

/// Prints a typed answer: pretty JSON, or the human rendering.
pub(crate) fn emit_as<T: serde::Serialize>(
    output: Output,
    v: &T,
    human: impl FnOnce(&T) -> String,
) {
    match output {
        Output::Json => say!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Output::Text => say!("{}", human(v)),
    }
}

pub(crate) fn emit(output: Output, v: &Value, human: impl FnOnce(&Value) -> String) {
    match output {
        Output::Json => say!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Output::Text => say!("{}", human(v)),
    }
}

/// Reads one OpenSSH public key line (not a private key: refuse those loudly).
fn read_public_key(file: &std::path::Path) -> Result<String> {
    let meta = std::fs::metadata(file)
        .with_context(|| format!("cannot read public key {}", file.display()))?;
    if meta.len() > 16 * 1024 {
        bail!("{} is larger than 16 KiB: not a public key", file.display());
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read public key {}", file.display()))?;
    if text.contains("PRIVATE KEY") {
        bail!(
            "{} is a private key; pass the public key (usually the same path with .pub)",
            file.display()
        );
    }
    let line = text.trim();
    if line.is_empty() || line.lines().count() != 1 {
        bail!(
            "{} must hold exactly one OpenSSH public key line",
            file.display()
        );
    }
    Ok(line.to_string())
}

pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn path_id(id: &str) -> Result<&str> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("`{id}` is not a request id (ids are letters and digits, see `airlock list`)");
    }
    Ok(id)
}

fn run(cli: Cli) -> Result<i32> {
    let out = cli.output;
    // Without AIRLOCK_TOKEN, client commands use the token `airlock login` saved.
    let Some(command) = cli.command else {
        say!("{GUIDE}");
        return Ok(0);
    };
    let token = match (&cli.token, &command) {
        (Some(t), _) => Some(t.clone()),
        (
            None,
            Command::Serve { .. }
            | Command::Login
            | Command::Logout
            | Command::Completions { .. }
            | Command::Init { .. }
            | Command::Doctor { .. }
            | Command::Config { .. }
            | Command::Man { .. },
        ) => None,
        (None, _) => login::saved_token()?,
    };
    let client = || Client::new(&cli.addr, token.clone());
    match command {
        Command::Status => {
            let c = client();
            let active: Vec<RequestView> = c.get_as("/api/v1/requests?mine=true&state=active")?;
            let queue: Vec<RequestView> = c.get_as("/api/v1/requests?to_review=true")?;
            let (post_reviews, to_review): (Vec<_>, Vec<_>) =
                queue.into_iter().partition(|r| r.breakglass);
            let status = output::Status {
                active,
                to_review,
                post_reviews,
            };
            let now = time::OffsetDateTime::now_utc();
            emit_as(out, &status, |s| output::status(s, now));
        }
        Command::Doctor { config } => return doctor::doctor(out, &config),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => return config_check::check(out, &file),
        Command::Init { dir, provider } => {
            let written = init::write(&dir, &provider)?;
            let config = dir.join("airlock.toml");
            if out == Output::Json {
                say!("{}", json!({"dir": dir, "files": written}));
            } else {
                for p in &written {
                    say!("wrote {}", p.display());
                }
                say!(
                    "next: airlock serve --config {}   (check it first: airlock policy test {} --config {})",
                    config.display(),
                    dir.join("policy-tests.toml").display(),
                    config.display()
                );
            }
        }
        Command::Completions { shell } => docs::completions(shell, &mut std::io::stdout())?,
        Command::Man { dir } => {
            let pages = docs::man_pages(&dir)?;
            if out == Output::Json {
                println!("{}", json!({"dir": dir, "pages": pages}));
            } else {
                println!("wrote {} man pages to {}", pages.len(), dir.display());
            }
        }
        Command::Serve {
            config,
            dev,
            data_dir,
            listen,
        } => {
            serve::serve(serve::ServeArgs {
                config,
                dev,
                data_dir,
                listen,
            })?;
        }
        Command::Request {
            entitlement,
            duration,
            reason,
            start,
            wait,
        } => {
            let c = client();
            let mut body =
                json!({"entitlement": entitlement, "duration": duration, "reason": reason});
            if let Some(start) = start {
                body["start"] = json!(start);
            }
            let r = c.post_as("/api/v1/requests", &body)?;
            return finish_request(&c, out, r, wait);
        }
        Command::Breakglass {
            entitlement,
            duration,
            reason,
            wait,
        } => {
            let c = client();
            let r = c.post_as(
                "/api/v1/breakglass",
                &json!({"entitlement": entitlement, "duration": duration, "reason": reason}),
            )?;
            eprintln!(
                "BREAK-GLASS: this access is logged loudly and opens a post-incident review."
            );
            return finish_request(&c, out, r, wait);
        }
        Command::Review {
            id,
            approve,
            deny: _,
            comment,
        } => {
            let decision = if approve { "approve" } else { "deny" };
            if proxy::is_run_id(&id) {
                return proxy::review(&client(), out, &id, decision, comment);
            }
            let r: RequestView = client().post_as(
                &format!("/api/v1/requests/{}/reviews", path_id(&id)?),
                &json!({"decision": decision, "comment": comment}),
            )?;
            emit_as(out, &r, output::request_detail);
        }
        Command::Show { id } => {
            let r: RequestView = client().get_as(&format!("/api/v1/requests/{}", path_id(&id)?))?;
            emit_as(out, &r, output::request_detail);
        }
        Command::List {
            state,
            mine,
            to_review,
        } => {
            let mut q = vec![];
            if let Some(s) = state {
                if !s.bytes().all(|b| b.is_ascii_lowercase()) {
                    bail!("--state must be one of pending, approved, active, expired, revoked, denied, withdrawn, lapsed, failed");
                }
                q.push(format!("state={s}"));
            }
            if mine {
                q.push("mine=true".into());
            }
            if to_review {
                q.push("to_review=true".into());
            }
            let r: Vec<RequestView> =
                client().get_as(&format!("/api/v1/requests?{}", q.join("&")))?;
            emit_as(out, &r, |v| output::request_list(v));
        }
        Command::Withdraw { id } => {
            let r: RequestView = client().post_as(
                &format!("/api/v1/requests/{}/withdraw", path_id(&id)?),
                &json!({}),
            )?;
            emit_as(out, &r, output::request_line);
        }
        Command::Revoke { id, comment } => {
            let r: RequestView = client().post_as(
                &format!("/api/v1/requests/{}/revoke", path_id(&id)?),
                &json!({"comment": comment}),
            )?;
            emit_as(out, &r, output::request_line);
        }
        Command::Credentials {
            id,
            public_key: Some(file),
        } => {
            let key = read_public_key(&file)?;
            let r = client().post(
                &format!("/api/v1/requests/{}/credentials", path_id(&id)?),
                &json!({ "public_key": key }),
            )?;
            emit(out, &r, |v| {
                v["certificate"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| serde_json::to_string_pretty(v).unwrap_or_default())
            });
        }
        Command::Ssh { command } => {
            let (provider, what) = match &command {
                SshCommand::Krl { provider } => (provider, "krl"),
                SshCommand::CaKey { provider } => (provider, "ca.pub"),
            };
            if provider.is_empty()
                || !provider
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                bail!("`{provider}` is not a provider name (see [providers.NAME] in the config)");
            }
            let path = format!("/api/v1/providers/{provider}/ssh/{what}");
            let body = client().get_bytes(&path, 64 << 20)?;
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            match command {
                SshCommand::Krl { .. } if out == Output::Json => {
                    use base64::Engine;
                    let v = json!({"provider": provider, "krl_base64": base64::engine::general_purpose::STANDARD.encode(&body)});
                    say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                }
                SshCommand::CaKey { .. } if out == Output::Json => {
                    let v = json!({"provider": provider, "public_key": String::from_utf8_lossy(&body).trim_end()});
                    say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                }
                SshCommand::Krl { .. } if std::io::IsTerminal::is_terminal(&stdout) => {
                    bail!("the KRL is binary: redirect it to a file (airlock ssh krl {provider} > revoked.krl)")
                }
                _ => {
                    if let Err(e) = stdout.write_all(&body).and_then(|_| stdout.flush()) {
                        if e.kind() != std::io::ErrorKind::BrokenPipe {
                            return Err(e.into());
                        }
                    }
                }
            }
        }
        Command::Drift { provider } => {
            let path = match &provider {
                Some(p) => format!("/api/v1/drift?provider={}", urlencode(p)),
                None => "/api/v1/drift".to_string(),
            };
            let r = client().get(&path)?;
            emit(out, &r, output::drift_report);
        }
        Command::Credentials {
            id,
            public_key: None,
        } => {
            let r = client().get(&format!("/api/v1/requests/{}/credentials", path_id(&id)?))?;
            emit(out, &r, |v| {
                let get = |k: &str| {
                    v.get(k)
                        .map(|x| {
                            x.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| x.to_string())
                        })
                        .unwrap_or_default()
                };
                if v.get("password").is_some() {
                    format!(
                        "PGPASSWORD='{}' psql -h {} -p {} -U {} {}\n# expires at {}",
                        get("password"),
                        get("host"),
                        get("port"),
                        get("username"),
                        get("database"),
                        get("expires_at")
                    )
                } else {
                    serde_json::to_string_pretty(v).unwrap_or_default()
                }
            });
        }
        Command::Entitlements => {
            let r = client().get("/api/v1/entitlements")?;
            emit(out, &r, |v| {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .map(|e| {
                                format!(
                                    "{:<28} max {:>6}s  {}",
                                    e["name"].as_str().unwrap_or(""),
                                    e["max_duration"],
                                    e["description"].as_str().unwrap_or("")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default()
            });
        }
        Command::Login => {
            let r = login::login(&Client::new(&cli.addr, None), out == Output::Json)?;
            emit(out, &r, |v| {
                format!(
                    "logged in as {} (groups {}, mfa {}) until {}; token saved in {}",
                    v["user"].as_str().unwrap_or(""),
                    v["groups"],
                    v["mfa"],
                    v["expires_at"].as_str().unwrap_or(""),
                    v["token_file"].as_str().unwrap_or("")
                )
            });
        }
        Command::Logout => {
            let r = login::logout(&cli.addr)?;
            emit(out, &r, |v| match v["detail"].as_str() {
                Some(d) => d.to_string(),
                None => "logged out: the token was revoked and its file deleted".into(),
            });
        }
        Command::Whoami => {
            let r = client().get("/api/v1/whoami")?;
            emit(out, &r, |v| {
                format!(
                    "{} groups={} admin={}",
                    v["name"].as_str().unwrap_or(""),
                    v["groups"],
                    v["admin"]
                )
            });
        }
        Command::Exec {
            reason,
            no_wait,
            command,
        } => return proxy::exec(&client(), out, &reason, no_wait, &command),
        Command::Operation { command } => return proxy::operation(&client(), out, command),
        Command::Run { command } => return proxy::run(&client(), out, command),
        Command::Connect {
            id,
            listen,
            stdio,
            command,
        } => {
            return connect::connect(
                &client(),
                out,
                connect::ConnectArgs {
                    id,
                    listen,
                    stdio,
                    command,
                },
            )
        }
        Command::Session { command } => return connect::session(&client(), out, command),
        Command::Audit { command } => return audit(out, &client, command),
        Command::Policy {
            command: PolicyCommand::Test { file, config },
        } => {
            return offline::policy_test(out, &file, &config);
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    user,
                    groups,
                    ttl,
                    admin,
                },
        } => {
            let groups: Vec<String> = groups.into_iter().filter(|g| !g.is_empty()).collect();
            let r = client().post(
                "/api/v1/tokens",
                &json!({"user": user, "groups": groups, "ttl": ttl, "admin": admin}),
            )?;
            emit(out, &r, |v| v["token"].as_str().unwrap_or("").to_string());
        }
        Command::Token {
            command: TokenCommand::List { user },
        } => access::token_list(&client(), out, user)?,
        Command::Token {
            command: TokenCommand::Revoke { prefix, user },
        } => access::token_revoke(&client(), out, prefix, user)?,
        Command::Lock { command } => access::lock(&client(), out, command)?,
        Command::Unlock { command } => access::unlock(&client(), out, command)?,
        Command::User { command } => access::user(&client(), out, command)?,
    }
    Ok(0)
}

fn audit(out: Output, client: &dyn Fn() -> Client, command: AuditCommand) -> Result<i32> {
    match command {
        AuditCommand::Verify {
            offline: true,
            config: Some(config),
            since,
            key,
        } => {
            let since = match since {
                Some(f) => Some(offline::Since {
                    saved: tlog::read_note_file(&f)?,
                    key,
                }),
                None => None,
            };
            let (report, since) = offline::verify(&config, since)?;
            let mut v = serde_json::to_value(&report)?;
            let ok = report.ok && since.as_ref().is_none_or(|s| s.ok);
            if let Some(s) = since {
                v["since"] = serde_json::to_value(s)?;
            }
            emit(out, &v, human_verify);
            Ok(if ok { 0 } else { 1 })
        }
        AuditCommand::Verify { since, key, .. } => {
            let c = client();
            let mut v = c.get("/api/v1/audit/verify")?;
            let mut ok = v["ok"].as_bool() == Some(true);
            if let Some(f) = since {
                let saved = tlog::read_note_file(&f)?;
                let s = verify_since_online(&c, &saved, key.as_deref())?;
                ok &= s.ok;
                v["since"] = serde_json::to_value(s)?;
            }
            emit(out, &v, human_verify);
            Ok(if ok { 0 } else { 1 })
        }
        AuditCommand::Checkpoint => {
            let note = latest_checkpoint(&client())?;
            match out {
                Output::Text => say!("{}", note.trim_end_matches('\n')),
                Output::Json => {
                    let text = airlock_core::note::Note::parse(&note)
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .text;
                    let head = airlock_core::note::TreeHead::parse_text(&text)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    use base64::Engine as _;
                    emit(
                        out,
                        &json!({
                            "checkpoint": note,
                            "origin": head.origin,
                            "size": head.size,
                            "root": base64::engine::general_purpose::STANDARD.encode(head.root),
                        }),
                        |_| String::new(),
                    );
                }
            }
            Ok(0)
        }
        AuditCommand::Prove { seq, proof, key } => {
            let c = client();
            let mut v = match proof {
                Some(f) => {
                    let text = std::fs::read_to_string(&f)
                        .with_context(|| format!("cannot read proof {}", f.display()))?;
                    serde_json::from_str::<Value>(&text).with_context(|| {
                        format!(
                            "{} is not a proof (JSON from `audit prove SEQ -o json`)",
                            f.display()
                        )
                    })?
                }
                None => c.get(&format!("/api/v1/audit/proof/{seq}"))?,
            };
            let (vk, _) = tlog::choose_key(key.as_deref(), || server_verifier_key(&c))?;
            let result = tlog::check_inclusion(&v, seq, &vk);
            v["ok"] = json!(result.is_ok());
            v["problem"] = json!(result.as_ref().err().map(|e| e.to_string()));
            emit(out, &v, |v| match v["problem"].as_str() {
                None => format!(
                    "event {seq} is in the signed tree of {} events",
                    v["tree_size"]
                ),
                Some(p) => format!("proof FAILED: {p}"),
            });
            Ok(if result.is_ok() { 0 } else { 1 })
        }
        AuditCommand::Export {
            since,
            offline: true,
            config: Some(config),
        } => {
            offline::export(&config, since)?;
            Ok(0)
        }
        AuditCommand::Export { since, .. } => {
            let c = client();
            let mut since = since;
            loop {
                let page = c.get(&format!("/api/v1/audit/events?since={since}&limit=1000"))?;
                let events = page.as_array().cloned().unwrap_or_default();
                for e in &events {
                    say!("{}", serde_json::to_string(e)?);
                }
                match events.last().and_then(|e| e["seq"].as_u64()) {
                    Some(last) if events.len() == 1000 => since = last,
                    _ => break,
                }
            }
            Ok(0)
        }
        AuditCommand::Pubkey {
            offline: true,
            config: Some(config),
        } => {
            let (key, vk) = offline::pubkey(&config)?;
            emit(
                out,
                &json!({"algorithm": "ed25519", "public_key": key, "verifier_key": vk}),
                human_pubkey,
            );
            Ok(0)
        }
        AuditCommand::Pubkey { .. } => {
            let v = client().get("/api/v1/audit/pubkey")?;
            emit(out, &v, human_pubkey);
            Ok(0)
        }
    }
}

fn human_pubkey(v: &Value) -> String {
    format!(
        "{}\n{}",
        v["public_key"].as_str().unwrap_or(""),
        v["verifier_key"].as_str().unwrap_or("")
    )
}

/// The latest signed checkpoint note from the server.
fn latest_checkpoint(c: &Client) -> Result<String> {
    let bytes = c.get_bytes(
        "/api/v1/audit/checkpoint",
        airlock_core::note::MAX_NOTE_BYTES as u64,
    )?;
    String::from_utf8(bytes).context("the server's checkpoint is not UTF-8")
}

/// The server's note verifier key (`/api/v1/audit/pubkey`).
fn server_verifier_key(c: &Client) -> Result<airlock_core::note::VerifierKey> {
    let v = c.get("/api/v1/audit/pubkey")?;
    let k = v["verifier_key"]
        .as_str()
        .context("the server did not send a verifier key (is it older than this CLI?)")?;
    airlock_core::note::VerifierKey::parse(k)
        .map_err(|e| anyhow::anyhow!("server verifier key: {e}"))
}

/// `verify --since` against a server: fetch its latest checkpoint and a
/// consistency proof, check both here.
fn verify_since_online(c: &Client, saved: &str, key: Option<&str>) -> Result<tlog::SinceReport> {
    let (vk, pinned) = tlog::choose_key(key, || server_verifier_key(c))?;
    let current = match latest_checkpoint(c) {
        Ok(n) => Some(n),
        Err(e) if e.to_string().contains("[HTTP 404]") => None,
        Err(e) => return Err(e),
    };
    Ok(tlog::check_since(
        saved,
        current.as_deref(),
        &vk,
        pinned,
        |m, n| {
            let v = c.get(&format!("/api/v1/audit/consistency?from={m}&to={n}"))?;
            tlog::consistency_answer(&v, m, n)
        },
    ))
}

fn human_verify(v: &Value) -> String {
    let chain = if v["ok"].as_bool() == Some(true) {
        format!(
            "audit chain OK: {} events, {} signed checkpoints verified",
            v["events"], v["checkpoints_verified"]
        )
    } else {
        format!(
            "audit chain BROKEN at seq {}: {}",
            v["first_bad_seq"],
            v["problem"].as_str().unwrap_or("unknown problem")
        )
    };
    let s = &v["since"];
    if s.is_null() {
        return chain;
    }
    if s["ok"].as_bool() == Some(true) {
        format!(
            "{chain}\nappend-only since the saved checkpoint: size {} -> {} (consistency proof verified)",
            s["from"], s["to"]
        )
    } else {
        format!(
            "{chain}\nNOT an extension of the saved checkpoint: {}",
            s["problem"].as_str().unwrap_or("unknown problem")
        )
    }
}

/// Prints the request and, with `--wait`, follows it to a settled state.
fn finish_request(c: &Client, out: Output, r: RequestView, wait: bool) -> Result<i32> {
    if !wait {
        emit_as(out, &r, output::request_line);
        return Ok(0);
    }
    let id = r.id.clone();
    let started = Instant::now();
    let spinner = ['|', '/', '-', '\\'];
    let mut i = 0;
    let mut cur = r;
    loop {
        let state = cur.state.clone();
        match state.as_str() {
            "pending" | "approved" => {
                if out == Output::Text {
                    eprint!(
                        "\r{} {id} {state}, waiting {}s ",
                        spinner[i % 4],
                        started.elapsed().as_secs()
                    );
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(500));
                cur = c.get_as(&format!("/api/v1/requests/{id}"))?;
            }
            _ => {
                if out == Output::Text {
                    eprintln!();
                }
                emit_as(out, &cur, output::request_detail);
                return Ok(if state == "active" { 0 } else { 1 });
            }
        }
    }
}
