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

#[cfg(test)]
mod tests {
    use super::super::testing::run;
    use super::*;

    fn hook(yaml: &str) -> (Option<Hook>, Vec<String>) {
        let raw: RawHook = serde_yaml::from_str(yaml).unwrap();
        let (hook, errors, _) = run(|_, errors, _| build_hook(&raw, Path::new("/b"), "c", errors));
        (hook, errors)
    }

    #[test]
    fn signal_hooks() {
        let (h, e) = hook("{signal: hup, pid_file: run/x.pid}");
        assert_eq!(e, Vec::<String>::new());
        assert_eq!(
            h,
            Some(Hook::Signal {
                signal: nix::sys::signal::Signal::SIGHUP,
                pid_file: "/b/run/x.pid".into()
            })
        );
        assert_eq!(
            hook("{signal: SIGUSR1, pid_file: /p}").1,
            Vec::<String>::new()
        );
    }

    #[test]
    fn exec_hooks_get_the_default_timeout() {
        let (h, e) = hook("{exec: [/bin/true, a], env: [HOME, _X1]}");
        assert_eq!(e, Vec::<String>::new());
        assert_eq!(
            h,
            Some(Hook::Exec {
                argv: vec!["/bin/true".into(), "a".into()],
                timeout: DEFAULT_HOOK_TIMEOUT,
                env: vec!["HOME".into(), "_X1".into()],
            })
        );
    }

    #[test]
    fn invalid_hooks() {
        let cases: &[(&str, &[&str])] = &[
            ("{signal: HUP}", &["c: a `signal` hook needs `pid_file`"]),
            (
                "{signal: NOPE, pid_file: /p}",
                &["c: `NOPE` is not a signal name (HUP, USR1, TERM, ...)"],
            ),
            (
                "{signal: HUP, pid_file: /p, timeout: 5s, env: [A]}",
                &[
                    "c: `timeout` applies to `exec` hooks only",
                    "c: `env` applies to `exec` hooks only",
                ],
            ),
            (
                "{exec: []}",
                &["c: `exec` needs a program: [\"/path/to/program\", \"arg\", ...]"],
            ),
            (
                "{exec: ['']}",
                &["c: `exec` needs a program: [\"/path/to/program\", \"arg\", ...]"],
            ),
            (
                "{exec: [/p], pid_file: /p}",
                &["c: `pid_file` applies to `signal` hooks only"],
            ),
            (
                "{exec: [/p], env: [1A, A-B]}",
                &[
                    "c: `env` lists `1A`, which is not an environment variable name (letters, digits and `_`, not starting with a digit)",
                    "c: `env` lists `A-B`, which is not an environment variable name (letters, digits and `_`, not starting with a digit)",
                ],
            ),
            (
                "{signal: HUP, exec: [/p]}",
                &["c: a hook is either `signal` or `exec`, not both"],
            ),
            (
                "{}",
                &["c: a hook needs `signal:` + `pid_file:` or `exec:`"],
            ),
        ];
        for (yaml, want) in cases {
            assert_eq!(hook(yaml).1, *want, "{yaml}");
        }
    }
}
