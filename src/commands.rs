//! One function per command of the command line. Each returns `Ok` or an [`Error`] that
//! `main` prints and maps to the contract's exit code; logs (once the config is known)
//! follow `log:`.

use crate::output::kubernetes_secret;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crate::cli::{Cli, Command};
use crate::config::{self, Config, Secrets};
use crate::engine::{Engine, Outcome, RefreshError};
use crate::error::Error;
use crate::provider::Provider;
use crate::secret::{Environment, ProcessEnv};
use crate::{daemon, logging, status};

pub async fn dispatch(cli: Cli) -> Result<(), Error> {
    let path = cli.config.unwrap_or_else(config::default_path);
    match cli.command {
        Command::Check { offline } => check(&path, offline).await,
        Command::Once { force } => once(&path, force).await,
        Command::Status { json } => status_cmd(&path, json).await,
        Command::Run => {
            let config = load(&path, Secrets::Resolve)?;
            logging::init(config.log.format, &config.log.level);
            for p in crate::preflight::unwritable(&config) {
                tracing::error!("cannot write here, every refresh will fail: {p}");
            }
            report_orphans(&config);
            prove_kube_access(&config, true).await?;
            daemon::run(path, config).await
        }
        #[cfg(feature = "emulator")]
        Command::Demo { dir } => crate::demo::run(&dir).await,
        #[cfg(feature = "emulator")]
        Command::Emulate { listen, settings } => emulate(listen, settings.as_deref()).await,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut crate::cli::command(), "tokend", &mut script);
            print_bytes(&script)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(crate::cli::command())
                .render(&mut page)
                .map_err(Error::Man)?;
            print_bytes(&page)
        }
    }
}

/// Writes generated text to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn print_bytes(bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::Stdout(e)),
    }
}

/// Proves that every `kubernetes_secret` output can be written (GET and a dry-run write),
/// before any provider call spends a one-time input: a refusal (RBAC) is a configuration
/// error. An API server that does not answer stops `check` and `once` (exit 1); `run`
/// starts anyway and writes the Secrets once it answers, as it would after an outage.
async fn prove_kube_access(config: &Config, daemon: bool) -> Result<(), Error> {
    let access = crate::output::kubernetes_secret::prove_access(
        config
            .credentials
            .iter()
            .map(|c| (c.name.as_str(), c.kube_outputs.as_slice())),
    )
    .await;
    if !access.refused.is_empty() {
        return Err(config::ConfigError::Invalid {
            path: config.path.clone(),
            errors: access.refused,
        }
        .into());
    }
    if access.unreachable.is_empty() {
        return Ok(());
    }
    if daemon {
        for line in &access.unreachable {
            tracing::error!(
                "cannot check the Kubernetes output at start, will retry at each write: {line}"
            );
        }
        return Ok(());
    }
    Err(Error::Kubernetes(access.unreachable.join("; ")))
}

/// Loads the config (and its secrets, unless skipped), with the load deadline.
fn load(path: &Path, secrets: Secrets) -> Result<Config, Error> {
    Ok(config::load_within(path, ProcessEnv, secrets)?)
}

async fn check(path: &Path, offline: bool) -> Result<(), Error> {
    let secrets = if offline {
        Secrets::Skip
    } else {
        Secrets::Resolve
    };
    let config = load(path, secrets)?;
    let kube_warnings = kube_propagation_warnings(&config);
    for w in config
        .warnings
        .iter()
        .chain(&exposure_warnings(&config))
        .chain(&kube_warnings)
    {
        eprintln!("warning: {w}");
    }
    for (name, path) in orphans(&config) {
        eprintln!(
            "warning: {}",
            crate::store::local::orphan_message(&name, &path)
        );
    }
    // Host-specific, and only a warning: an admin may check a config as another user than
    // the service's, and the unit's sandbox is not this shell's.
    if !offline {
        for p in crate::preflight::unwritable(&config) {
            eprintln!("warning: {p}");
        }
        prove_kube_access(&config, false).await?;
    }
    println!("{}", plan(&config, &ProcessEnv));
    if offline {
        println!(
            "offline: no secret was read; run `tokend check` where the secrets are to check them too"
        );
    }
    // The chains' ages from the state directory, if there is one: a chain that dies of age
    // is best caught here, before the outage that kills it.
    for e in status::collect(&config, SystemTime::now()) {
        if let Some(line) = status::chain_line(&e) {
            if e.chain.as_ref().is_some_and(|c| c.warning.is_some()) {
                eprintln!("warning: credential `{}`: {line}", e.credential);
            } else {
                println!("{}: {line}", e.credential);
            }
        }
    }
    Ok(())
}

/// What other users or hosts could reach: endpoints beyond loopback and output directories
/// anyone may write into (where a reader could be handed a planted token file).
fn exposure_warnings(config: &Config) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    if let Some(listen) = config.listen
        && !listen.ip().is_loopback()
    {
        out.push(format!(
            "`listen` ({listen}) is not a loopback address: anyone who can reach it can read \
             /v1/status and trigger refreshes; bind 127.0.0.1 unless a firewall or network \
             policy guards the port"
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in &config.credentials {
        for o in &c.outputs {
            let mut dirs: Vec<&Path> = o.path().parent().into_iter().collect();
            if matches!(o.target, crate::output::Target::Dir { .. }) {
                dirs.push(o.path());
            }
            for dir in dirs {
                let Ok(meta) = std::fs::metadata(dir) else {
                    continue;
                };
                let mode = meta.mode() & 0o7777;
                if mode & 0o002 != 0 && seen.insert(dir.to_path_buf()) {
                    out.push(format!(
                        "credential `{}`: output directory `{}` is writable by other users \
                         (mode {mode:04o}): any local user can replace or plant files there; \
                         make it 0755 or 0750",
                        c.name,
                        dir.display()
                    ));
                }
            }
        }
    }
    out
}

/// What `check` prints: everything tokend will do, and nothing secret. `env` is where
/// the proxy variables are read for credentials without a `proxy`.
pub fn plan(config: &Config, env: &dyn Environment) -> String {
    let mut out = format!(
        "config `{}` is valid: {} credential(s), state in {}{}\n",
        config.path.display(),
        config.credentials.len(),
        config.state_dir.display(),
        config
            .listen
            .map(|l| format!(", HTTP on {l}"))
            .unwrap_or_default()
    );
    if let Some(ha) = &config.ha {
        out.push_str(&format!("{}\n", ha.describe()));
    }
    for c in &config.credentials {
        out.push_str(&format!("\n{}: {}\n", c.name, c.provider.plan()));
        let when = match c.refresh.every {
            Some(every) => format!("every {}", humantime::format_duration(every)),
            None => format!("at {} of the lifetime", c.refresh.at),
        };
        out.push_str(&format!(
            "  refresh {when} (up to {} earlier), retry {}..{} (permanent errors every {}), timeout {}\n",
            c.refresh.jitter,
            humantime::format_duration(c.retry.initial),
            humantime::format_duration(c.retry.max),
            humantime::format_duration(c.retry.permanent),
            humantime::format_duration(c.timeout),
        ));
        let lifetime = match (c.lifetime, c.provider.documented_lifetime()) {
            (Some(l), _) => format!("{} (configured)", humantime::format_duration(l)),
            (None, Some(d)) => format!(
                "the smallest of expires_in, JWT exp and the documented {}",
                humantime::format_duration(d)
            ),
            (None, None) => "the smallest of expires_in and JWT exp (else 1h)".to_owned(),
        };
        out.push_str(&format!("  lifetime: {lifetime}\n"));
        out.push_str(&egress_line(c, env));
        for o in &c.outputs {
            out.push_str(&format!("  -> {}\n", o.describe()));
        }
        for o in &c.kube_outputs {
            out.push_str(&format!("  -> {}\n", o.describe()));
        }
        for h in &c.hooks {
            out.push_str(&format!("  on refresh: {}\n", h.describe()));
        }
    }
    out
}

/// Where this credential's requests leave from: the first thing to check when a provider
/// answers "IP not allowed".
fn egress_line(c: &config::Credential, env: &dyn Environment) -> String {
    format!("  egress: {}\n", c.egress.describe(env))
}

async fn once(path: &Path, force: bool) -> Result<(), Error> {
    let config = load(path, Secrets::Resolve)?;
    logging::init(config.log.format, &config.log.level);
    // Installed before any request goes out: from here on SIGTERM/SIGINT never kill a
    // rotation in flight (an init container deleted, a CI job cancelled).
    let stop_signal = crate::signals::Stop::install().map_err(Error::Signals)?;
    prove_kube_access(&config, false).await?;
    let engine = crate::runtime::open(&config, false).await?.engine;
    report_orphans(&config);
    let stopping = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    // Bounded so that a config with thousands of credentials does not open thousands of
    // connections at once.
    let permits = Arc::new(tokio::sync::Semaphore::new(32));
    for cred in &config.credentials {
        let (engine, permits, stopping) = (engine.clone(), permits.clone(), stopping.clone());
        let cred = Arc::new(cred.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            if stopping.load(Ordering::SeqCst) {
                return (cred.name.clone(), None);
            }
            (
                cred.name.clone(),
                Some(once_one(&engine, cred, force).await),
            )
        });
    }
    let failed = join_once(tasks, stop_signal, &stopping).await;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Refresh {
            failed,
            total: config.credentials.len(),
        })
    }
}

type OnceTasks = tokio::task::JoinSet<(String, Option<Result<Outcome, RefreshError>>)>;

/// Waits for every credential of `once`, and returns what failed (sorted). On SIGTERM or
/// SIGINT nothing new starts (`stopping`) and refreshes in flight get the daemon's grace
/// period to finish and save: a rotated refresh token must reach the state file.
async fn join_once(
    mut tasks: OnceTasks,
    mut stop_signal: crate::signals::Stop,
    stopping: &AtomicBool,
) -> Vec<String> {
    let mut failed = Vec::new();
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        let joined = tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(j) => j,
                None => break,
            },
            name = stop_signal.recv(), if grace.is_none() => {
                tracing::warn!(
                    in_flight = tasks.len(),
                    "{name}: starting nothing new; in-flight refreshes get {}s to finish and save",
                    daemon::SHUTDOWN_GRACE.as_secs()
                );
                stopping.store(true, Ordering::SeqCst);
                grace = Some(tokio::time::Instant::now() + daemon::SHUTDOWN_GRACE);
                continue;
            }
            () = sleep_until(grace) => {
                tracing::warn!(
                    abandoned = tasks.len(),
                    "in-flight refreshes did not finish within {}s; stopping anyway",
                    daemon::SHUTDOWN_GRACE.as_secs()
                );
                failed.push(format!(
                    "{} credential(s) did not finish within the {}s grace period after the stop signal",
                    tasks.len(),
                    daemon::SHUTDOWN_GRACE.as_secs()
                ));
                tasks.abort_all();
                break;
            }
        };
        match joined {
            Ok((_, Some(Ok(Outcome::Current { .. } | Outcome::Refreshed)))) => {}
            Ok((name, Some(Ok(Outcome::Deferred { .. })))) => failed.push(format!(
                "credential `{name}`: another process of the ha group kept the claim on its refresh; try again later (its `status` shows the holder)"
            )),
            Ok((_, Some(Err(e)))) => failed.push(crate::util::escape_control(&e.to_string())),
            Ok((name, None)) => failed.push(format!(
                "credential `{name}`: not attempted, tokend was told to stop"
            )),
            Err(e) => failed.push(format!("a refresh task crashed: {e}")),
        }
    }
    failed.sort();
    failed
}

/// How long `once` holds a rotated refresh token in memory while the state file cannot be
/// written (a full or read-only disk), retrying every second. Exiting sooner would forget
/// the only valid refresh token; waiting longer would stall an init container forever.
const ONCE_SAVE_DEADLINE: Duration = Duration::from_secs(60);

/// One credential of `once`: ensure it, then keep a rotated refresh token that could not be
/// saved until it is, or until the deadline.
async fn once_one(
    engine: &Engine,
    cred: Arc<config::Credential>,
    force: bool,
) -> Result<Outcome, RefreshError> {
    let mut slot = engine.slot(cred);
    if let Some(token) = slot.current_token(SystemTime::now()) {
        crate::events::token_reused(
            &slot.credential.name,
            &token,
            slot.refresh_at(&token),
            slot.state.last_success.map(|t| t.0),
        );
    }
    let mut result = engine.ensure(&mut slot, force, true).await;
    // A shared store: another process may hold the claim, and its commit brings the token.
    let patience = tokio::time::Instant::now() + ONCE_SAVE_DEADLINE;
    while let Ok(Outcome::Deferred { until }) = &result {
        let wait = until
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(Duration::from_secs(1));
        if tokio::time::Instant::now() + wait > patience {
            break;
        }
        tokio::time::sleep(wait).await;
        result = engine.ensure(&mut slot, force, true).await;
    }
    if !slot.holds_unsaved_chain() {
        return result;
    }
    tracing::warn!(
        credential = %slot.credential.name,
        "the new refresh token could not be saved; holding it in memory and retrying the state \
         write every second for up to {}s (free space or fix the state directory now)",
        ONCE_SAVE_DEADLINE.as_secs()
    );
    let deadline = tokio::time::Instant::now() + ONCE_SAVE_DEADLINE;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if engine.flush(&mut slot).await.is_ok() {
            tracing::info!(credential = %slot.credential.name, "the new refresh token is saved");
            // The token fetched with it is in state now: publish it (no new fetch).
            return engine.ensure(&mut slot, false, true).await;
        }
    }
    tracing::error!(
        credential = %slot.credential.name,
        "gave up saving the new refresh token after {}s; the chain is lost unless a login is \
         configured (the next run logs in, or needs a new refresh token from the provider)",
        ONCE_SAVE_DEADLINE.as_secs()
    );
    result
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Logs every state file no configured credential owns (a rename or a removal).
fn report_orphans(config: &Config) {
    for (name, path) in orphans(config) {
        tracing::warn!("{}", crate::store::local::orphan_message(&name, &path));
    }
}

fn orphans(config: &Config) -> Vec<(String, std::path::PathBuf)> {
    let names: Vec<&str> = config.credentials.iter().map(|c| c.name.as_str()).collect();
    crate::store::local::orphans(&config.state_dir, &names)
}

async fn status_cmd(path: &Path, json: bool) -> Result<(), Error> {
    let config = load(path, Secrets::Skip)?;
    let now = SystemTime::now();
    let entries = match &config.ha {
        None => status::collect(&config, now),
        Some(_) => {
            // The shared store's password is a secret: read the config again with secrets.
            let config = load(path, Secrets::Resolve)?;
            let ha = config
                .ha
                .as_ref()
                .expect("the same config has the same ha block");
            let store = crate::runtime::shared_store(ha)?.store();
            status::collect_shared(&config, store.as_ref(), now).await
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).expect("status always serializes")
        );
    } else {
        print!("{}", status::table(&entries, now));
    }
    for (name, path) in orphans(&config) {
        eprintln!(
            "note: {}",
            crate::store::local::orphan_message(&name, &path)
        );
    }
    if entries.iter().all(status::Entry::is_healthy) {
        Ok(())
    } else {
        Err(Error::Unhealthy)
    }
}

#[cfg(feature = "emulator")]
async fn emulate(listen: std::net::SocketAddr, settings: Option<&Path>) -> Result<(), Error> {
    use crate::emulator;
    logging::init(config::LogFormat::Text, "info");
    let settings = match settings {
        None => emulator::EmulatorConfig::default(),
        // YAML is a superset of JSON, so one parser reads both.
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| crate::util::io_reason(&e))
            .and_then(|text| serde_yaml::from_str(&text).map_err(|e| e.to_string()))
            .map_err(|reason| Error::EmulatorSettings {
                path: path.to_path_buf(),
                reason,
            })?,
    };
    let emu = emulator::Emulator::start(listen, settings)
        .await
        .map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?;
    eprintln!(
        "tokend: provider emulators on {} (vandar /v3/login /v2/login /v3/refreshtoken, saba /api/v1/user/authenticate, \
         yavapteke /YavaptekeAPI/connect/token, oauth2 /oauth2/token; control under /_emulator/); Ctrl-C stops",
        emu.url()
    );
    crate::signals::wait_for_termination().await;
    Ok(())
}

/// `check`'s words on `kubernetes_secret` outputs whose consumers may see an expired token:
/// a refresh margin under [`PROPAGATION_MARGIN`], or env keys, which never update.
fn kube_propagation_warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for c in config
        .credentials
        .iter()
        .filter(|c| !c.kube_outputs.is_empty())
    {
        let lifetime = c.lifetime.or_else(|| c.provider.documented_lifetime());
        if let Some(lifetime) = lifetime {
            let refresh_after = match c.refresh.every {
                Some(every) => every.min(c.refresh.at.of(lifetime)),
                None => c.refresh.at.of(lifetime),
            };
            let margin = lifetime.saturating_sub(refresh_after);
            if margin < kubernetes_secret::PROPAGATION_MARGIN {
                out.push(format!(
                    "credential `{}`: a new token is written {} before the old one expires, but pods that mount a `kubernetes_secret` see it only after the kubelet's sync (about 60-90 s, never with subPath or env vars): refresh earlier (a lower `refresh.at`) for a margin of at least {}, or use a sidecar with a `dir` output",
                    c.name,
                    humantime::format_duration(margin),
                    humantime::format_duration(kubernetes_secret::PROPAGATION_MARGIN),
                ));
            }
        }
        for o in &c.kube_outputs {
            if matches!(o.format, kubernetes_secret::SecretFormat::Env { .. }) {
                out.push(format!(
                    "credential `{}`: output {} has env keys, and environment variables never change in a running pod: restart the consumers when the token changes (e.g. stakater Reloader), or mount the Secret as files",
                    c.name,
                    o.describe()
                ));
            }
        }
    }
    out
}
