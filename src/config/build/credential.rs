//! One credential: its name, the provider's keys, refresh and retry merged with the
//! defaults, timeout and lifetime, then its outputs and hooks.

use std::time::Duration;

use super::hook::build_hook;
use super::output::build_output;
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

    let outputs: Vec<Output> = match &rc.outputs {
        Some(list) if !list.is_empty() => list
            .iter()
            .enumerate()
            .filter_map(|(i, o)| {
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
