//! One `on_refresh` hook: a signal to a pid file, or a program to run.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use super::Errors;
use super::paths::resolve;
use crate::config::raw::RawHook;
use crate::hooks::Hook;

const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn build_hook(h: &RawHook, base: &Path, ctx: &str, errors: &mut Errors) -> Option<Hook> {
    match (&h.signal, &h.exec) {
        (Some(signal), None) => {
            if h.timeout.is_some() {
                errors.push(ctx, "`timeout` applies to `exec` hooks only");
            }
            if h.env.is_some() {
                errors.push(ctx, "`env` applies to `exec` hooks only");
            }
            let name = signal.trim().to_ascii_uppercase();
            let name = if name.starts_with("SIG") {
                name
            } else {
                format!("SIG{name}")
            };
            let parsed = nix::sys::signal::Signal::from_str(&name);
            let Some(pid_file) = &h.pid_file else {
                errors.push(ctx, "a `signal` hook needs `pid_file`");
                return None;
            };
            match parsed {
                Ok(sig) => Some(Hook::Signal {
                    signal: sig,
                    pid_file: resolve(base, pid_file),
                }),
                Err(_) => {
                    errors.push(
                        ctx,
                        format!("`{signal}` is not a signal name (HUP, USR1, TERM, ...)"),
                    );
                    None
                }
            }
        }
        (None, Some(argv)) => {
            if h.pid_file.is_some() {
                errors.push(ctx, "`pid_file` applies to `signal` hooks only");
            }
            if argv.is_empty() || argv[0].is_empty() {
                errors.push(
                    ctx,
                    "`exec` needs a program: [\"/path/to/program\", \"arg\", ...]",
                );
                return None;
            }
            let env = h.env.clone().unwrap_or_default();
            for name in &env {
                if !is_env_name(name) {
                    errors.push(
                        ctx,
                        format!(
                            "`env` lists `{name}`, which is not an environment variable name \
                             (letters, digits and `_`, not starting with a digit)"
                        ),
                    );
                }
            }
            Some(Hook::Exec {
                argv: argv.clone(),
                timeout: h.timeout.map(|d| d.0).unwrap_or(DEFAULT_HOOK_TIMEOUT),
                env,
            })
        }
        (Some(_), Some(_)) => {
            errors.push(ctx, "a hook is either `signal` or `exec`, not both");
            None
        }
        (None, None) => {
            errors.push(ctx, "a hook needs `signal:` + `pid_file:` or `exec:`");
            None
        }
    }
}
