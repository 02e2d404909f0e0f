//! Turns the raw file into a [`Config`]: defaults applied, every rule checked, every secret
//! resolved. Errors are collected, not returned at the first, so one `check` shows them all.
//! Each config element has its own builder module; each provider's keys are built in
//! `config::provider`.

mod credential;
mod egress;
mod ha;
mod hook;
mod output;
mod paths;
mod secrets;
mod url;
mod yaml_error;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use self::paths::{absolute, check_output_paths, check_unique_names, resolve};
pub(in crate::config) use self::secrets::SecretReader;
pub(in crate::config) use self::url::url;
pub use self::yaml_error::describe_yaml_error;
use super::raw::RawConfig;
use super::{Config, Credential, DEFAULT_STATE_DIR, LogSettings};
use crate::output::Output;
use crate::secret::Environment;

/// Whether secrets are read: `status` only needs names and paths, and must work for an
/// operator who cannot read the secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secrets {
    Resolve,
    Skip,
}

pub(in crate::config) struct Errors(pub(in crate::config) Vec<String>);

impl Errors {
    pub(in crate::config) fn push(&mut self, context: &str, message: impl Into<String>) {
        self.0.push(format!("{context}: {}", message.into()));
    }
}

/// Where relative paths and secrets are resolved from.
pub(in crate::config) struct Sources<'a> {
    pub(in crate::config) base: &'a Path,
    pub(in crate::config) env: &'a dyn Environment,
    pub(in crate::config) secrets: Secrets,
}

pub fn build(
    raw: RawConfig,
    text: &str,
    path: &Path,
    env: &dyn Environment,
    secrets: Secrets,
) -> Result<Config, Vec<String>> {
    let mut errors = Errors(Vec::new());
    let mut warnings = Vec::new();
    let base = absolute(crate::atomic::parent(path));
    let base = base.as_path();

    let state_dir = match raw.state_dir {
        Some(p) => resolve(base, &p),
        // systemd's StateDirectory= may list several; the first is ours.
        None => env
            .var("STATE_DIRECTORY")
            .and_then(|v| v.split(':').next().map(PathBuf::from))
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
    };

    let listen = raw
        .listen
        .as_deref()
        .and_then(|l| match SocketAddr::from_str(l) {
            Ok(a) => Some(a),
            Err(_) => {
                errors.push(
                    "`listen`",
                    format!("`{l}` is not an address; write IP:PORT, like 127.0.0.1:9464"),
                );
                None
            }
        });

    let log = raw.log.unwrap_or(super::raw::RawLog {
        format: None,
        level: None,
    });
    let level = log.level.unwrap_or_else(|| "info".to_owned());
    if !valid_log_level(&level) {
        errors.push(
            "`log.level`",
            format!("`{level}` is not a level; use error, warn, info, debug or trace"),
        );
    }

    let defaults = raw.defaults.unwrap_or_default();
    let credentials_raw = raw.credentials.unwrap_or_default();
    if credentials_raw.is_empty() {
        errors.push(
            "`credentials`",
            "no credentials are configured, so there is nothing to do",
        );
    }

    let sources = Sources { base, env, secrets };
    let ha = raw
        .ha
        .and_then(|h| ha::build(h, &sources, &mut errors, &mut warnings));
    let mut egress = egress::EgressBuilder::new(
        &defaults,
        &SecretReader {
            sources: &sources,
            ctx: "`defaults`",
        },
        &mut errors,
        &mut warnings,
    );
    let mut credentials = Vec::new();
    // Outputs of every credential, valid or not, so path clashes are reported in the same run.
    let mut all_outputs: Vec<(String, Vec<Output>)> = Vec::new();
    let name_lines = name_lines(text);
    for (index, rc) in credentials_raw.into_iter().enumerate() {
        let context = credential_context(&rc.name, index, &name_lines);
        let egress = egress.credential(
            rc.proxy.as_ref(),
            rc.ca_file.as_deref(),
            &SecretReader {
                sources: &sources,
                ctx: &context,
            },
            &mut errors,
            &mut warnings,
        );
        if let Some(c) = credential::build(
            rc,
            &defaults,
            &sources,
            &context,
            &mut errors,
            &mut warnings,
            &mut all_outputs,
        ) {
            credentials.push(Credential { egress, ..c });
        }
    }

    check_unique_names(&all_outputs, &mut errors);
    check_output_paths(&all_outputs, &state_dir, &mut errors);
    output::check_unique_secrets(&credentials, &mut errors);
    if let Some(h) = &ha {
        ha::check_state_names(h, &credentials, &mut errors);
    }

    if errors.0.is_empty() {
        Ok(Config {
            path: absolute(path),
            state_dir,
            listen,
            log: LogSettings {
                format: log.format.unwrap_or_default(),
                level,
            },
            credentials,
            ha,
            warnings,
        })
    } else {
        Err(errors.0)
    }
}

/// A plain level, or a full filter (`info,tokend=debug`). A bare word that is not a level
/// would parse as a target name and silently turn every log line off: refuse it.
fn valid_log_level(level: &str) -> bool {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let is_directive = level.contains(['=', ',', ':', '[']);
    if is_directive {
        // tracing-subscriber 0.3 panics slicing a directive at a non-ASCII character
        // (found by fuzzing); a real filter is ASCII anyway.
        level.is_ascii() && tracing_subscriber::EnvFilter::try_new(level).is_ok()
    } else {
        LEVELS.contains(&level.trim().to_ascii_lowercase().as_str())
    }
}

/// The first line of each `name: X` in the file, in one pass (a scan per credential would
/// make validating ten thousand credentials quadratic).
fn name_lines(text: &str) -> HashMap<&str, usize> {
    let mut lines = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim_start().trim_start_matches("- ").trim();
        if let Some(v) = l.strip_prefix("name:") {
            let name = v.trim().trim_matches(|c| c == '"' || c == '\'');
            lines.entry(name).or_insert(n + 1);
        }
    }
    lines
}

/// "credential `vandar-main` (line 12)": where the operator should look.
fn credential_context(name: &str, index: usize, name_lines: &HashMap<&str, usize>) -> String {
    match (name.is_empty(), name_lines.get(name)) {
        (false, Some(n)) => format!("credential `{name}` (line {n})"),
        (false, None) => format!("credential `{name}`"),
        (true, _) => format!("credentials[{index}]"),
    }
}

/// Runs one builder the way `build` does, without a file: paths relative to `/etc/tokend`,
/// no environment, secrets not read (so a literal secret only warns), context `c`.
#[cfg(test)]
pub(in crate::config) mod testing {
    use super::*;

    struct NoEnv;
    impl Environment for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    /// The builder's result, then the errors and warnings it reported.
    pub(in crate::config) fn run<T>(
        f: impl FnOnce(&SecretReader, &mut Errors, &mut Vec<String>) -> T,
    ) -> (T, Vec<String>, Vec<String>) {
        let sources = Sources {
            base: Path::new("/etc/tokend"),
            env: &NoEnv,
            secrets: Secrets::Skip,
        };
        let reader = SecretReader {
            sources: &sources,
            ctx: "c",
        };
        let mut errors = Errors(Vec::new());
        let mut warnings = Vec::new();
        let t = f(&reader, &mut errors, &mut warnings);
        (t, errors.0, warnings)
    }

    /// A raw credential of `provider` with the given extra YAML lines.
    pub(in crate::config) fn credential(
        provider: &str,
        keys: &str,
    ) -> super::super::raw::RawCredential {
        let yaml = format!("name: a\nprovider: {provider}\n{keys}");
        serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
    }
}
