//! One credential: its name, the provider's keys, refresh and retry merged with the
//! defaults, timeout and lifetime, then its outputs and hooks.

use std::time::Duration;

use super::hook::build_hook;
use super::output::{build_kube_secret, build_output};
use super::{Errors, SecretReader, Sources};
use crate::config::Credential;
use crate::config::provider;
use crate::config::raw::{RawCredential, RawDefaults, RawRefresh, RawRetry};
use crate::hooks::Hook;
use crate::output::Output;
use crate::provider::Provider;
use crate::schedule::{RefreshPolicy, RetryPolicy};
use crate::units::Share;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_NAME_LEN: usize = 100;

pub(super) fn build(
    rc: RawCredential,
    defaults: &RawDefaults,
    sources: &Sources,
    ctx: &str,
    errors: &mut Errors,
    warnings: &mut Vec<String>,
    all_outputs: &mut Vec<(String, Vec<Output>)>,
) -> Option<Credential> {
    let base = sources.base;
    let before = errors.0.len();
    check_name(&rc.name, ctx, errors);
    check_provider_keys(&rc, ctx, errors);

    let refresh = merge_refresh(defaults.refresh.as_ref(), rc.refresh.as_ref(), ctx, errors);
    let retry = merge_retry(defaults.retry.as_ref(), rc.retry.as_ref(), ctx, errors);
    let timeout = rc
        .timeout
        .or(defaults.timeout)
        .map(|d| d.0)
        .unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        errors.push(ctx, "`timeout` must be longer than zero");
    }
    let lifetime = rc.lifetime.map(|d| d.0);
    if lifetime.is_some_and(|d| d.is_zero()) {
        errors.push(ctx, "`lifetime` must be longer than zero");
    }

    let reader = SecretReader { sources, ctx };
    let provider = provider::build(&rc, ctx, &reader, errors, warnings);

    // `every` against the lifetime, where the lifetime is known before the first token.
    let known_lifetime = lifetime.or_else(|| provider.documented_lifetime());
    if let (Some(every), Some(life)) = (refresh.every, known_lifetime)
        && every >= life
    {
        errors.push(
            ctx,
            format!(
                "`refresh.every` ({}) must be shorter than the token lifetime ({})",
                humantime::format_duration(every),
                humantime::format_duration(life)
            ),
        );
    }

    let mut kube_outputs = Vec::new();
    let outputs: Vec<Output> = match &rc.outputs {
        Some(list) if !list.is_empty() => list
            .iter()
            .enumerate()
            .filter_map(|(i, o)| {
                if let Some(k) = &o.kubernetes_secret {
                    let ctx = format!("{ctx}: outputs[{i}]: kubernetes_secret");
                    kube_outputs.extend(build_kube_secret(o, k, &rc.name, base, &ctx, errors));
                    return None;
                }
                let ctx = format!("{ctx}: outputs[{i}]");
                build_output(o, &rc.name, base, &ctx, sources.secrets, errors, warnings)
            })
            .collect(),
        _ => {
            errors.push(ctx, "no `outputs`: say where the token should be written");
            Vec::new()
        }
    };
    let hooks: Vec<Hook> = rc
        .on_refresh
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, h)| build_hook(h, base, &format!("{ctx}: on_refresh[{i}]"), errors))
        .collect();

    all_outputs.push((rc.name.clone(), outputs.clone()));
    (errors.0.len() == before).then(|| Credential {
        name: rc.name,
        provider,
        refresh,
        retry,
        timeout,
        // Set by the caller, which builds it beside the credential (see `egress`).
        egress: Default::default(),
        lifetime,
        outputs,
        kube_outputs,
        hooks,
    })
}

fn check_name(name: &str, ctx: &str, errors: &mut Errors) {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        && name.len() <= MAX_NAME_LEN;
    if !valid {
        errors.push(
            ctx,
            format!(
                "`name` `{name}` is not valid: use lower-case letters, digits, `.`, `_` and `-`, starting with a letter or digit, at most {MAX_NAME_LEN} characters"
            ),
        );
    }
}

/// Rejects keys that belong to another provider, naming the ones this provider takes.
fn check_provider_keys(rc: &RawCredential, ctx: &str, errors: &mut Errors) {
    let set = [
        ("base_url", rc.base_url.is_some()),
        ("token_url", rc.token_url.is_some()),
        ("refresh_token", rc.refresh_token.is_some()),
        ("mobile", rc.mobile.is_some()),
        ("username", rc.username.is_some()),
        ("password", rc.password.is_some()),
        ("virtual_number", rc.virtual_number.is_some()),
        ("token_valid_days", rc.token_valid_days.is_some()),
        ("client_id", rc.client_id.is_some()),
        ("client_secret", rc.client_secret.is_some()),
        ("client_secret_param", rc.client_secret_param.is_some()),
        ("scope", rc.scope.is_some()),
        ("auth", rc.auth.is_some()),
        ("grant", rc.grant.is_some()),
        ("issuer", rc.issuer.is_some()),
        ("audience", rc.audience.is_some()),
        ("resource", rc.resource.is_some()),
        ("params", rc.params.is_some()),
        ("login_request", rc.login_request.is_some()),
        ("refresh_request", rc.refresh_request.is_some()),
        ("secrets", rc.secrets.is_some()),
        ("token_pointer", rc.token_pointer.is_some()),
        ("refresh_token_pointer", rc.refresh_token_pointer.is_some()),
        ("expires_in_pointer", rc.expires_in_pointer.is_some()),
        ("login_version", rc.login_version.is_some()),
    ];
    let allowed = provider::keys(rc.provider);
    for (key, present) in set {
        if present && !allowed.contains(&key) {
            errors.push(
                ctx,
                format!(
                    "`{key}` does not apply to provider {} (it takes {})",
                    rc.provider.as_str(),
                    allowed.join(", ")
                ),
            );
        }
    }
}

fn merge_refresh(
    defaults: Option<&RawRefresh>,
    own: Option<&RawRefresh>,
    ctx: &str,
    errors: &mut Errors,
) -> RefreshPolicy {
    let d = RefreshPolicy::default();
    let pick =
        |f: fn(&RawRefresh) -> Option<Share>| own.and_then(f).or_else(|| defaults.and_then(f));
    let at = pick(|r| r.at).unwrap_or(d.at);
    let jitter = pick(|r| r.jitter).unwrap_or(d.jitter);
    let every = match own.and_then(|r| r.every) {
        Some(v) => v,
        None => defaults.and_then(|r| r.every).flatten(),
    }
    .map(|e| e.0);
    if !(at.0 > 0.0 && at.0 < 1.0) {
        errors.push(
            ctx,
            format!("`refresh.at` is {at}; it must be between 0% and 100%, exclusive"),
        );
    }
    // 0% jitter is a deliberate "no jitter", so only the upper bound is exclusive here.
    if !(jitter.0 >= 0.0 && jitter.0 < 1.0) {
        errors.push(
            ctx,
            format!("`refresh.jitter` is {jitter}; it must be from 0% to below 100%"),
        );
    }
    if every.is_some_and(|e| e.is_zero()) {
        errors.push(ctx, "`refresh.every` must be longer than zero");
    }
    RefreshPolicy { at, every, jitter }
}

fn merge_retry(
    defaults: Option<&RawRetry>,
    own: Option<&RawRetry>,
    ctx: &str,
    errors: &mut Errors,
) -> RetryPolicy {
    let d = RetryPolicy::default();
    let pick = |f: fn(&RawRetry) -> Option<crate::units::Dur>| {
        own.and_then(f)
            .or_else(|| defaults.and_then(f))
            .map(|x| x.0)
    };
    let policy = RetryPolicy {
        initial: pick(|r| r.initial).unwrap_or(d.initial),
        max: pick(|r| r.max).unwrap_or(d.max),
        permanent: pick(|r| r.permanent).unwrap_or(d.permanent),
    };
    if policy.initial.is_zero() || policy.permanent.is_zero() {
        errors.push(
            ctx,
            "`retry.initial` and `retry.permanent` must be longer than zero",
        );
    }
    if policy.max < policy.initial {
        errors.push(
            ctx,
            format!(
                "`retry.max` ({}) is shorter than `retry.initial` ({})",
                humantime::format_duration(policy.max),
                humantime::format_duration(policy.initial)
            ),
        );
    }
    policy
}

#[cfg(test)]
mod tests {
    use super::super::testing::{credential, run};
    use super::*;
    use std::time::Duration;

    fn errors_of(f: impl FnOnce(&mut Errors)) -> Vec<String> {
        run(|_, errors, _| f(errors)).1
    }

    #[test]
    fn names() {
        let long = "a".repeat(MAX_NAME_LEN);
        let too_long = "a".repeat(MAX_NAME_LEN + 1);
        for ok in ["a", "0", "vandar-main", "a.b_c-9", long.as_str()] {
            assert_eq!(
                errors_of(|e| check_name(ok, "c", e)),
                Vec::<String>::new(),
                "{ok}"
            );
        }
        for bad in ["", "A", "-a", ".a", "a b", "a/b", "é", too_long.as_str()] {
            assert_eq!(
                errors_of(|e| check_name(bad, "c", e)),
                [format!(
                    "c: `name` `{bad}` is not valid: use lower-case letters, digits, `.`, `_` and `-`, starting with a letter or digit, at most 100 characters"
                )],
                "{bad}"
            );
        }
    }

    #[test]
    fn keys_of_another_provider_are_named() {
        let rc = credential("saba", "username: u\nclient_id: i\nscope: s\n");
        let takes = "base_url, username, password, virtual_number, token_valid_days";
        assert_eq!(
            errors_of(|e| check_provider_keys(&rc, "c", e)),
            [
                format!("c: `client_id` does not apply to provider saba (it takes {takes})"),
                format!("c: `scope` does not apply to provider saba (it takes {takes})"),
            ]
        );
    }

    fn refresh(yaml: &str) -> Option<RawRefresh> {
        (!yaml.is_empty()).then(|| serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn refresh_merge() {
        let d = RefreshPolicy::default();
        // (defaults, own, at, every, jitter)
        let cases: &[(&str, &str, f64, Option<u64>, f64)] = &[
            ("", "", d.at.0, None, d.jitter.0),
            ("{at: 50%, jitter: 0%}", "", 0.5, None, 0.0),
            (
                "{at: 50%, every: 1h}",
                "{at: 75%}",
                0.75,
                Some(3600),
                d.jitter.0,
            ),
            // `every: null` in a credential switches off the default's `every`.
            ("{every: 1h}", "{every: null}", d.at.0, None, d.jitter.0),
        ];
        for (defaults, own, at, every, jitter) in cases {
            let (got, errors, _) = run(|_, e, _| {
                merge_refresh(refresh(defaults).as_ref(), refresh(own).as_ref(), "c", e)
            });
            assert_eq!(errors, Vec::<String>::new(), "{defaults} {own}");
            assert_eq!(
                got,
                RefreshPolicy {
                    at: Share(*at),
                    every: every.map(Duration::from_secs),
                    jitter: Share(*jitter)
                },
                "{defaults} {own}"
            );
        }
        let bad: &[(&str, &[&str])] = &[
            (
                "{at: 0%}",
                &["c: `refresh.at` is 0%; it must be between 0% and 100%, exclusive"],
            ),
            (
                "{at: 100%}",
                &["c: `refresh.at` is 100%; it must be between 0% and 100%, exclusive"],
            ),
            (
                "{jitter: 100%}",
                &["c: `refresh.jitter` is 100%; it must be from 0% to below 100%"],
            ),
            (
                "{jitter: -1%}",
                &["c: `refresh.jitter` is -1%; it must be from 0% to below 100%"],
            ),
            (
                "{every: 0s}",
                &["c: `refresh.every` must be longer than zero"],
            ),
        ];
        for (own, want) in bad {
            let errors = errors_of(|e| {
                merge_refresh(None, refresh(own).as_ref(), "c", e);
            });
            assert_eq!(errors, *want, "{own}");
        }
    }

    #[test]
    fn retry_merge() {
        let retry = |y: &str| -> Option<RawRetry> {
            (!y.is_empty()).then(|| serde_yaml::from_str(y).unwrap())
        };
        let (got, errors, _) = run(|_, e, _| {
            merge_retry(
                retry("{initial: 2s, max: 1m}").as_ref(),
                retry("{max: 5m}").as_ref(),
                "c",
                e,
            )
        });
        assert_eq!(errors, Vec::<String>::new());
        // `max` equal to `initial` is a constant delay, not an error.
        let equal = errors_of(|e| {
            merge_retry(None, retry("{initial: 1m, max: 1m}").as_ref(), "c", e);
        });
        assert_eq!(equal, Vec::<String>::new());
        assert_eq!(
            got,
            RetryPolicy {
                initial: Duration::from_secs(2),
                max: Duration::from_secs(300),
                permanent: RetryPolicy::default().permanent
            }
        );
        let bad: &[(&str, &[&str])] = &[
            (
                "{initial: 0s}",
                &["c: `retry.initial` and `retry.permanent` must be longer than zero"],
            ),
            (
                "{permanent: 0s}",
                &["c: `retry.initial` and `retry.permanent` must be longer than zero"],
            ),
            (
                "{initial: 2m, max: 1m}",
                &["c: `retry.max` (1m) is shorter than `retry.initial` (2m)"],
            ),
        ];
        for (own, want) in bad {
            let errors = errors_of(|e| {
                merge_retry(None, retry(own).as_ref(), "c", e);
            });
            assert_eq!(errors, *want, "{own}");
        }
    }
}
