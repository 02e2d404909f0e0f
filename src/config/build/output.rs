//! One output: a `file` (raw, json, env or template) or a `dir`, its mode and group.

use std::path::Path;

use super::paths::resolve;
use super::{Errors, Secrets};
use crate::atomic::Access;
use crate::config::raw::{OutputFormat, RawOutput};
use crate::output::{Format, Output, Target, render};

pub(super) fn build_output(
    o: &RawOutput,
    credential: &str,
    base: &Path,
    ctx: &str,
    secrets: Secrets,
    errors: &mut Errors,
    warnings: &mut Vec<String>,
) -> Option<Output> {
    let before = errors.0.len();
    let access = Access {
        mode: o.mode.map(|m| m.0).unwrap_or(0o600),
        gid: o.group.as_deref().and_then(|g| match resolve_group(g) {
            Ok(gid) => Some(gid),
            // Offline (`check --offline` in CI, `status`) the config is usually read on
            // another host than the one it is for: its groups need not exist here.
            Err(e) if secrets == Secrets::Skip => {
                warnings.push(format!("{ctx}: {e}"));
                None
            }
            Err(e) => {
                errors.push(ctx, e);
                None
            }
        }),
    };
    let target = match (&o.file, &o.dir) {
        (Some(file), None) => {
            let format = match (o.format.unwrap_or_default(), &o.template) {
                (OutputFormat::Template, Some(t)) => {
                    let unknown = render::template_unknown(t);
                    if !unknown.is_empty() {
                        errors.push(
                            ctx,
                            format!(
                                "`template` uses unknown placeholder(s) {}; known: {}",
                                unknown
                                    .iter()
                                    .map(|u| format!("{{{{{u}}}}}"))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                render::PLACEHOLDERS
                                    .iter()
                                    .map(|p| format!("{{{{{p}}}}}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        );
                    } else if !t.contains("{{") {
                        errors.push(ctx, "`template` has no {{token}} placeholder");
                    }
                    Format::Template(t.clone())
                }
                (OutputFormat::Template, None) => {
                    errors.push(ctx, "`format: template` needs a `template:`");
                    Format::Raw
                }
                (_, Some(_)) => {
                    errors.push(ctx, "`template` is set but `format` is not `template`");
                    Format::Raw
                }
                (OutputFormat::Raw, None) => Format::Raw,
                (OutputFormat::Json, None) => Format::Json,
                (OutputFormat::Env, None) => {
                    let prefix = o
                        .env_prefix
                        .clone()
                        .unwrap_or_else(|| render::env_prefix(credential));
                    let valid = prefix
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && prefix
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !valid {
                        errors.push(
                            ctx,
                            format!("`env_prefix` `{prefix}` is not a valid variable name prefix"),
                        );
                    }
                    Format::Env { prefix }
                }
            };
            if o.env_prefix.is_some() && o.format != Some(OutputFormat::Env) {
                errors.push(ctx, "`env_prefix` only applies to `format: env`");
            }
            Target::File {
                path: resolve(base, file),
                format,
            }
        }
        (None, Some(dir)) => {
            if o.format.is_some() || o.template.is_some() || o.env_prefix.is_some() {
                errors.push(
                    ctx,
                    "a `dir` output always holds token, token.json and expires_at; `format`, `template` and `env_prefix` do not apply",
                );
            }
            Target::Dir {
                path: resolve(base, dir),
            }
        }
        (Some(_), Some(_)) => {
            errors.push(ctx, "set `file` or `dir`, not both");
            return None;
        }
        (None, None) => {
            errors.push(ctx, "an output needs `file:` or `dir:`");
            return None;
        }
    };
    (errors.0.len() == before).then_some(Output { target, access })
}

fn resolve_group(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("group `{group}` does not exist on this host")),
        Err(e) => Err(format!("cannot look up group `{group}`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::run;
    use super::*;

    /// The output built from `yaml` for credential `my-api` (errors, warnings), offline or not.
    fn output(yaml: &str, secrets: Secrets) -> (Option<Output>, Vec<String>, Vec<String>) {
        let raw: RawOutput = serde_yaml::from_str(yaml).unwrap();
        run(|_, e, w| build_output(&raw, "my-api", Path::new("/b"), "c", secrets, e, w))
    }

    fn target(yaml: &str) -> Target {
        let (o, errors, _) = output(yaml, Secrets::Resolve);
        assert_eq!(errors, Vec::<String>::new(), "{yaml}");
        o.unwrap().target
    }

    #[test]
    fn valid_outputs() {
        let file = |format| Target::File {
            path: "/b/t".into(),
            format,
        };
        let cases = [
            ("{file: t}", file(Format::Raw)),
            ("{file: t, format: json}", file(Format::Json)),
            (
                "{file: t, format: env}",
                file(Format::Env {
                    prefix: render::env_prefix("my-api"),
                }),
            ),
            (
                "{file: t, format: env, env_prefix: X_}",
                file(Format::Env {
                    prefix: "X_".into(),
                }),
            ),
            (
                "{file: t, format: template, template: 'T={{token}}'}",
                file(Format::Template("T={{token}}".into())),
            ),
            ("{dir: /d}", Target::Dir { path: "/d".into() }),
        ];
        for (yaml, want) in cases {
            assert_eq!(target(yaml), want, "{yaml}");
        }
        let (o, _, _) = output("{file: t, mode: '0640', group: '0'}", Secrets::Resolve);
        assert_eq!(
            o.unwrap().access,
            Access {
                mode: 0o640,
                gid: Some(0)
            }
        );
    }

    #[test]
    fn invalid_outputs() {
        let cases: &[(&str, &[&str])] = &[
            ("{file: t, dir: d}", &["c: set `file` or `dir`, not both"]),
            ("{mode: '0600'}", &["c: an output needs `file:` or `dir:`"]),
            (
                "{file: t, format: template}",
                &["c: `format: template` needs a `template:`"],
            ),
            (
                "{file: t, template: '{{token}}'}",
                &["c: `template` is set but `format` is not `template`"],
            ),
            (
                "{file: t, format: template, template: 'plain'}",
                &["c: `template` has no {{token}} placeholder"],
            ),
            (
                "{file: t, format: env, env_prefix: 1X}",
                &["c: `env_prefix` `1X` is not a valid variable name prefix"],
            ),
            (
                "{file: t, env_prefix: X_}",
                &["c: `env_prefix` only applies to `format: env`"],
            ),
            (
                "{dir: d, format: json}",
                &[
                    "c: a `dir` output always holds token, token.json and expires_at; `format`, `template` and `env_prefix` do not apply",
                ],
            ),
        ];
        for (yaml, want) in cases {
            let (o, errors, _) = output(yaml, Secrets::Resolve);
            assert_eq!(errors, *want, "{yaml}");
            assert!(o.is_none(), "{yaml}");
        }
    }

    #[test]
    fn an_unknown_template_placeholder_lists_the_known_ones() {
        let (_, errors, _) = output(
            "{file: t, format: template, template: '{{nope}}'}",
            Secrets::Resolve,
        );
        let known: Vec<String> = render::PLACEHOLDERS
            .iter()
            .map(|p| format!("{{{{{p}}}}}"))
            .collect();
        assert_eq!(
            errors,
            [format!(
                "c: `template` uses unknown placeholder(s) {{{{nope}}}}; known: {}",
                known.join(", ")
            )]
        );
    }

    #[test]
    fn a_missing_group_is_an_error_online_and_a_warning_offline() {
        const GROUP: &str = "tokend-no-such-group-7f3a";
        let yaml = format!("{{file: t, group: {GROUP}}}");
        let message = format!("c: group `{GROUP}` does not exist on this host");
        let (o, errors, warnings) = output(&yaml, Secrets::Resolve);
        assert_eq!((o, errors, warnings), (None, vec![message.clone()], vec![]));
        let (o, errors, warnings) = output(&yaml, Secrets::Skip);
        assert_eq!(o.map(|o| o.access.gid), Some(None));
        assert_eq!((errors, warnings), (vec![], vec![message]));
    }
}
