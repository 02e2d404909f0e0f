//! The configuration: loaded from YAML into `raw` types, then validated in one place into
//! [`Config`], with secrets resolved and defaults applied. Nothing downstream re-validates.

mod build;
mod depth;
mod provider;
pub mod raw;

pub use build::Secrets;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use raw::LogFormat;

use crate::hooks::Hook;
use crate::output::Output;
use crate::provider::ProviderConfig;
use crate::schedule::{RefreshPolicy, RetryPolicy};
use crate::secret::Environment;

pub const DEFAULT_PATH: &str = "/etc/tokend/config.yaml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tokend";

#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub listen: Option<SocketAddr>,
    pub log: LogSettings,
    pub credentials: Vec<Credential>,
    /// Shared state across processes; `None`: a single instance (state in `state_dir`).
    pub ha: Option<crate::ha::HaConfig>,
    /// Things that are allowed but worth a word from `check` (literal secrets, plain http).
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Credential {
    pub name: String,
    pub provider: ProviderConfig,
    pub refresh: RefreshPolicy,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    /// Extra trust anchors and the proxy, checked and parsed when the config is built.
    pub egress: crate::net::Egress,
    /// Overrides whatever the provider says about the token's lifetime.
    pub lifetime: Option<Duration>,
    pub outputs: Vec<Output>,
    /// `kubernetes_secret` outputs: written over the network, after `outputs`.
    pub kube_outputs: Vec<crate::output::kubernetes_secret::KubeSecret>,
    pub hooks: Vec<Hook>,
}

/// Every way loading a configuration can fail; all mean exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file `{}`: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{}", format_invalid(path, errors))]
    Invalid { path: PathBuf, errors: Vec<String> },
}

fn format_invalid(path: &Path, errors: &[String]) -> String {
    if let [one] = errors {
        return format!("invalid config `{}`: {one}", path.display());
    }
    let mut text = format!(
        "invalid config `{}` ({} problems):",
        path.display(),
        errors.len()
    );
    for e in errors {
        text.push_str("\n  - ");
        text.push_str(e);
    }
    text
}

impl ConfigError {
    pub fn errors(&self) -> Vec<String> {
        match self {
            ConfigError::Read { .. } => vec![self.to_string()],
            ConfigError::Invalid { errors, .. } => errors.clone(),
        }
    }
}

/// Where the config is read from: `--config`, else `$TOKEND_CONFIG`, else the default.
pub fn default_path() -> PathBuf {
    std::env::var_os("TOKEND_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// Reads, parses and validates the file at `path`, resolving every secret.
pub fn load(path: &Path, env: &dyn Environment, secrets: Secrets) -> Result<Config, ConfigError> {
    let bytes =
        crate::fsread::read(path, crate::fsread::CONFIG_LIMIT).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: match e {
                crate::fsread::ReadError::Io(_) => e.to_string(),
                _ => format!("it {e}"),
            },
        })?;
    let text = String::from_utf8(bytes).map_err(|_| ConfigError::Read {
        path: path.to_path_buf(),
        reason: "it is not valid UTF-8".to_owned(),
    })?;
    parse(&text, path, env, secrets)
}

/// [`load`] under [`crate::fsread::LOAD_DEADLINE`]: the config and every secret it names
/// are read on a thread of their own, so a hung file system delays the answer, never the
/// caller forever.
pub fn load_within(
    path: &Path,
    env: impl Environment + Send + 'static,
    secrets: Secrets,
) -> Result<Config, ConfigError> {
    let owned = path.to_path_buf();
    crate::fsread::with_deadline(crate::fsread::LOAD_DEADLINE, move || {
        load(&owned, &env, secrets)
    })
    .unwrap_or_else(|| {
        Err(ConfigError::Read {
            path: path.to_path_buf(),
            reason: format!(
                "reading it and its secret files took longer than {} s (a hung file system, \
                 or a secret on a mount that does not answer?)",
                crate::fsread::LOAD_DEADLINE.as_secs()
            ),
        })
    })
}

/// Parses and validates configuration text; `path` locates errors and anchors relative paths.
pub fn parse(
    text: &str,
    path: &Path,
    env: &dyn Environment,
    secrets: Secrets,
) -> Result<Config, ConfigError> {
    let invalid = |errors| ConfigError::Invalid {
        path: path.to_path_buf(),
        errors,
    };
    if text.trim().is_empty() {
        return Err(invalid(vec!["the file is empty".to_owned()]));
    }
    depth::check(text).map_err(|e| invalid(vec![e]))?;
    let raw: raw::RawConfig = match serde_yaml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return Err(invalid(vec![build::describe_yaml_error(&e)])),
    };
    build::build(raw, text, path, env, secrets).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoEnv;
    impl Environment for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.yaml"));
        let text = std::fs::read_to_string(path).unwrap();
        let config = parse(&text, path, &NoEnv, Secrets::Skip).unwrap();
        assert_eq!(config.credentials.len(), 4);
        assert_eq!(config.state_dir, Path::new("/var/lib/tokend"));
    }

    #[test]
    fn defaults_are_inherited_and_overridden() {
        let text = "state_dir: /s\ndefaults:\n  refresh: { at: 50%, jitter: 0% }\n  timeout: 5s\n\
                    credentials:\n  - name: a\n    provider: yavapteke\n    client_id: x\n    client_secret: s\n    refresh: { at: 75% }\n    outputs: [ { file: /o/a } ]\n";
        let c = parse(text, Path::new("/etc/t.yaml"), &NoEnv, Secrets::Resolve).unwrap();
        let cred = &c.credentials[0];
        assert_eq!(cred.refresh.at, crate::units::Share(0.75));
        assert_eq!(cred.refresh.jitter, crate::units::Share(0.0));
        assert_eq!(cred.timeout, Duration::from_secs(5));
        assert_eq!(
            c.warnings.len(),
            1,
            "literal secret warns: {:?}",
            c.warnings
        );
    }

    #[test]
    fn absurd_durations_are_config_errors() {
        // Accepted by `check` before, then a panic in `once` (overflow, year > 9999).
        for (key, value) in [
            ("lifetime", "10000y"),
            ("retry", "{ permanent: 580000000000y }"),
        ] {
            let text = format!(
                "credentials:\n- name: p\n  provider: yavapteke\n  client_id: c\n  client_secret: s\n  {key}: {value}\n  outputs: [{{file: /t}}]\n"
            );
            let e = parse(&text, Path::new("/x/config.yaml"), &NoEnv, Secrets::Skip).unwrap_err();
            assert!(e.to_string().contains("10 years"), "{e}");
        }
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let text = "state_dir: state\ncredentials:\n  - name: a\n    provider: yavapteke\n    client_id: x\n    client_secret: s\n    outputs: [ { file: out/a } ]\n";
        let c = parse(
            text,
            Path::new("/etc/tokend/config.yaml"),
            &NoEnv,
            Secrets::Resolve,
        )
        .unwrap();
        assert_eq!(c.state_dir, Path::new("/etc/tokend/state"));
        assert_eq!(
            c.credentials[0].outputs[0].path(),
            Path::new("/etc/tokend/out/a")
        );
    }
}
