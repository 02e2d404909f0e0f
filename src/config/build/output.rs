//! One output: a `file` (raw, json, env or template) or a `dir`, its mode and group.

use std::path::Path;

use super::paths::resolve;
use super::{Errors, Secrets};
use crate::atomic::Access;
use crate::config::raw::{OutputFormat, RawKubeSecret, RawOutput};
use crate::output::kubernetes_secret::{KubeSecret, SecretFormat};
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
            errors.push(
                ctx,
                "an output needs `file:`, `dir:` or `kubernetes_secret:`",
            );
            return None;
        }
    };
    (errors.0.len() == before).then_some(Output { target, access })
}

/// A `kubernetes_secret` output. The other keys of the output (`file`, `mode`, …) do not
/// apply: the Secret's keys, labels and annotations say everything.
pub(super) fn build_kube_secret(
    o: &RawOutput,
    k: &RawKubeSecret,
    credential: &str,
    base: &Path,
    ctx: &str,
    errors: &mut Errors,
) -> Option<KubeSecret> {
    let before = errors.0.len();
    if o.file.is_some()
        || o.dir.is_some()
        || o.format.is_some()
        || o.template.is_some()
        || o.env_prefix.is_some()
        || o.mode.is_some()
        || o.group.is_some()
    {
        errors.push(
            ctx,
            "an output is a `kubernetes_secret` or a `file`/`dir`; put `format` and `env_prefix` inside `kubernetes_secret:`, and `mode`/`group` do not apply to a Secret",
        );
    }
    if !is_dns_subdomain(&k.name) {
        errors.push(
            ctx,
            format!(
                "`name` `{}` is not a valid Secret name: lower-case letters, digits, `-` and `.`, starting and ending with a letter or digit, at most 253 characters",
                k.name
            ),
        );
    }
    if let Some(ns) = &k.namespace
        && (ns.len() > 63 || ns.contains('.') || !is_dns_subdomain(ns))
    {
        errors.push(
            ctx,
            format!("`namespace` `{ns}` is not a valid namespace name: lower-case letters, digits and `-`, at most 63 characters"),
        );
    }
    // These say which token the Secret holds; a user value would defeat the never-older rule.
    let reserved =
        |key: &String| key.starts_with("tokend.dev/") || key == "app.kubernetes.io/managed-by";
    for (what, map) in [("labels", &k.labels), ("annotations", &k.annotations)] {
        for key in map
            .iter()
            .flatten()
            .map(|(key, _)| key)
            .filter(|key| reserved(key))
        {
            errors.push(
                ctx,
                format!("`{what}` may not set `{key}`: tokend sets it (`tokend.dev/*` and `app.kubernetes.io/managed-by` are tokend's)"),
            );
        }
    }
    let format = match (k.format.unwrap_or_default(), &k.env_prefix) {
        (OutputFormat::Raw, None) => SecretFormat::Files,
        (OutputFormat::Env, prefix) => {
            let prefix = prefix
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
            SecretFormat::Env { prefix }
        }
        (OutputFormat::Raw, Some(_)) => {
            errors.push(ctx, "`env_prefix` only applies to `format: env`");
            SecretFormat::Files
        }
        (OutputFormat::Json | OutputFormat::Template, _) => {
            errors.push(
                ctx,
                "`format` of a `kubernetes_secret` is `env` or absent (the `dir` output's keys: token, token.json, expires_at)",
            );
            SecretFormat::Files
        }
    };
    (errors.0.len() == before).then(|| KubeSecret {
        name: k.name.clone(),
        namespace: k.namespace.clone(),
        labels: k.labels.clone().unwrap_or_default(),
        annotations: k.annotations.clone().unwrap_or_default(),
        format,
        kubeconfig: k.kubeconfig.as_ref().map(|p| resolve(base, p)),
    })
}

/// Two `kubernetes_secret` outputs naming one Secret would overwrite each other's token.
pub(super) fn check_unique_secrets(credentials: &[crate::config::Credential], errors: &mut Errors) {
    let mut seen: std::collections::HashMap<
        (&Option<String>, &Option<std::path::PathBuf>, &str),
        &str,
    > = std::collections::HashMap::new();
    for c in credentials {
        for o in &c.kube_outputs {
            let key = (&o.namespace, &o.kubeconfig, o.name.as_str());
            if let Some(other) = seen.insert(key, &c.name) {
                errors.push(
                    &format!("credential `{}`", c.name),
                    format!(
                        "output {} is also an output of credential `{other}`; two outputs cannot write the same Secret",
                        o.describe()
                    ),
                );
            }
        }
    }
}

/// RFC 1123 subdomain, as Kubernetes requires of object names.
fn is_dns_subdomain(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name.chars().all(|c| alnum(c) || c == '-' || c == '.')
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
            (
                "{mode: '0600'}",
                &["c: an output needs `file:`, `dir:` or `kubernetes_secret:`"],
            ),
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

    /// The `kubernetes_secret` output built from `yaml` (errors).
    fn kube(yaml: &str) -> (Option<KubeSecret>, Vec<String>) {
        let raw: RawOutput = serde_yaml::from_str(yaml).unwrap();
        let k = raw.kubernetes_secret.as_ref().unwrap();
        let (o, errors, _) =
            run(|_, e, _| build_kube_secret(&raw, k, "my-api", Path::new("/b"), "c", e));
        (o, errors)
    }

    #[test]
    fn kubernetes_secret_outputs() {
        let (o, errors) = kube(
            "{kubernetes_secret: {name: t.k-1, namespace: apps, labels: {a: b}, kubeconfig: kc}}",
        );
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(
            o.unwrap(),
            KubeSecret {
                name: "t.k-1".into(),
                namespace: Some("apps".into()),
                labels: [("a".to_owned(), "b".to_owned())].into(),
                annotations: Default::default(),
                format: SecretFormat::Files,
                kubeconfig: Some("/b/kc".into()),
            }
        );
        let (o, _) = kube("{kubernetes_secret: {name: t, format: env}}");
        assert_eq!(
            o.unwrap().format,
            SecretFormat::Env {
                prefix: "MY_API".into()
            }
        );
        let cases: &[(&str, &str)] = &[
            (
                "{kubernetes_secret: {name: Tok}}",
                "c: `name` `Tok` is not a valid Secret name: lower-case letters, digits, `-` and `.`, starting and ending with a letter or digit, at most 253 characters",
            ),
            (
                "{kubernetes_secret: {name: t, namespace: a.b}}",
                "c: `namespace` `a.b` is not a valid namespace name: lower-case letters, digits and `-`, at most 63 characters",
            ),
            (
                "{kubernetes_secret: {name: t, format: json}}",
                "c: `format` of a `kubernetes_secret` is `env` or absent (the `dir` output's keys: token, token.json, expires_at)",
            ),
            (
                "{kubernetes_secret: {name: t, env_prefix: X}}",
                "c: `env_prefix` only applies to `format: env`",
            ),
            (
                "{kubernetes_secret: {name: t, annotations: {tokend.dev/token-gen: '9'}}}",
                "c: `annotations` may not set `tokend.dev/token-gen`: tokend sets it (`tokend.dev/*` and `app.kubernetes.io/managed-by` are tokend's)",
            ),
            (
                "{kubernetes_secret: {name: t}, mode: '0600'}",
                "c: an output is a `kubernetes_secret` or a `file`/`dir`; put `format` and `env_prefix` inside `kubernetes_secret:`, and `mode`/`group` do not apply to a Secret",
            ),
        ];
        for (yaml, want) in cases {
            let (o, errors) = kube(yaml);
            assert_eq!(errors, [*want], "{yaml}");
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
