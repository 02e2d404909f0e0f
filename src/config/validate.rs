//! Turns the raw file into a [`Config`]: defaults applied, every rule checked, every secret
//! resolved. Errors are collected, not returned at the first, so one `check` shows them all.

mod egress;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::raw::{
    ClientAuth, GrantKind, OutputFormat, ProviderKind, RawConfig, RawCredential, RawDefaults,
    RawHook, RawOutput, RawRefresh, RawRequest, RawRetry,
};
use super::units::Share;
use super::{Config, Credential, DEFAULT_STATE_DIR, LogSettings};
use crate::atomic::Access;
use crate::hooks::Hook;
use crate::output::{Format, Output, Target, render};
use crate::provider::{Provider, ProviderConfig, http_json, oauth2, saba, vandar, yavapteke};
use crate::schedule::{RefreshPolicy, RetryPolicy};
use crate::secret::{Environment, Secret, SecretSource};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_NAME_LEN: usize = 100;

/// A serde/YAML error as one sentence: location first, and for unknown keys the closest
/// valid key instead of serde's list of every possibility.
pub fn describe_yaml_error(e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    // yaml_serde appends " at line L column C" for the error's own location; we put that
    // first instead. Anything after it is libyaml's context ("while scanning a quoted
    // scalar at line 5 column 16"), which often points at the real culprit: keep it.
    let (location, message) = match e.location() {
        Some(loc) => {
            let at = format!(" at line {} column {}", loc.line(), loc.column());
            let message = match text.find(&at) {
                Some(i) => format!("{}{}", &text[..i], &text[i + at.len()..]),
                None => text.clone(),
            };
            (
                format!("line {} column {}: ", loc.line(), loc.column()),
                message,
            )
        }
        None => (String::new(), text.clone()),
    };
    let message = rewrite_unknown_field(&message).unwrap_or(message);
    format!("{location}{message}")
}

/// "unknown field `x`, expected one of `a`, `b`" → "unknown key `x`; did you mean `a`?",
/// and the same for enum values ("unknown variant").
fn rewrite_unknown_field(message: &str) -> Option<String> {
    let (start, marker, noun) = ["unknown field `", "unknown variant `"]
        .iter()
        .zip(["key", "value"])
        .find_map(|(m, noun)| message.find(m).map(|i| (i, *m, noun)))?;
    let prefix = &message[..start];
    let rest = &message[start + marker.len()..];
    let end = rest.find('`')?;
    let key = &rest[..end];
    let candidates: Vec<&str> = rest[end + 1..].split('`').skip(1).step_by(2).collect();
    let hint = crate::util::did_you_mean(key, &candidates);
    let hint = if hint.is_empty() {
        format!("; valid {noun}s here: {}", candidates.join(", "))
    } else {
        hint
    };
    Some(format!("{prefix}unknown {noun} `{key}`{hint}"))
}

/// Whether secrets are read: `status` only needs names and paths, and must work for an
/// operator who cannot read the secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secrets {
    Resolve,
    Skip,
}

struct Errors(Vec<String>);

impl Errors {
    fn push(&mut self, context: &str, message: impl Into<String>) {
        self.0.push(format!("{context}: {}", message.into()));
    }
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
        if let Some(c) = build_credential(
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

fn build_credential(
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
    let mut secret = |field: &str, source: &Option<SecretSource>, errors: &mut Errors| {
        reader.read(field, source.as_ref()?, errors, warnings)
    };

    let provider = match rc.provider {
        ProviderKind::Vandar => {
            let refresh_token = secret("refresh_token", &rc.refresh_token, errors);
            let password = secret("password", &rc.password, errors);
            let login = match (&rc.mobile, rc.password.is_some()) {
                (Some(mobile), true) => password.map(|password| vandar::Login {
                    mobile: mobile.clone(),
                    password,
                }),
                (None, false) => None,
                (Some(_), false) => {
                    errors.push(ctx, "`mobile` is set but `password` is missing");
                    None
                }
                (None, true) => {
                    errors.push(ctx, "`password` is set but `mobile` is missing");
                    None
                }
            };
            if rc.refresh_token.is_none() && rc.mobile.is_none() && rc.password.is_none() {
                errors.push(
                    ctx,
                    "vandar needs `refresh_token` (v3 chain) or `mobile` + `password` (v2 login), or both",
                );
            }
            ProviderConfig::Vandar(vandar::Vandar {
                base_url: url(
                    ctx,
                    "base_url",
                    rc.base_url.as_deref(),
                    vandar::DEFAULT_BASE_URL,
                    errors,
                    warnings,
                ),
                refresh_token,
                login,
                login_version: rc.login_version.unwrap_or_default(),
            })
        }
        ProviderKind::Saba => {
            let days = rc
                .token_valid_days
                .unwrap_or(i64::from(saba::DEFAULT_VALID_DAYS));
            if !(1..=365).contains(&days) {
                errors.push(
                    ctx,
                    format!("`token_valid_days` is {days}; Saba accepts 1 to 365"),
                );
            }
            let username = required(ctx, "username", rc.username.clone(), errors);
            let virtual_number = required(ctx, "virtual_number", rc.virtual_number.clone(), errors);
            required_secret(ctx, "password", &rc.password, errors);
            let password = secret("password", &rc.password, errors);
            ProviderConfig::Saba(saba::Saba {
                base_url: url(
                    ctx,
                    "base_url",
                    rc.base_url.as_deref(),
                    saba::DEFAULT_BASE_URL,
                    errors,
                    warnings,
                ),
                username: username.unwrap_or_default(),
                password: password.unwrap_or_else(|| Secret::new("")),
                virtual_number: virtual_number.unwrap_or_default(),
                token_valid_days: days.clamp(1, 365) as u16,
            })
        }
        ProviderKind::Yavapteke => {
            let client_id = required(ctx, "client_id", rc.client_id.clone(), errors);
            required_secret(ctx, "client_secret", &rc.client_secret, errors);
            let client_secret = secret("client_secret", &rc.client_secret, errors);
            let param = rc
                .client_secret_param
                .clone()
                .unwrap_or_else(|| yavapteke::DEFAULT_SECRET_PARAM.to_owned());
            if param.is_empty() || !param.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                errors.push(
                    ctx,
                    format!("`client_secret_param` `{param}` is not a form field name"),
                );
            }
            ProviderConfig::Yavapteke(yavapteke::Yavapteke {
                token_url: url(
                    ctx,
                    "token_url",
                    rc.token_url.as_deref(),
                    yavapteke::DEFAULT_TOKEN_URL,
                    errors,
                    warnings,
                ),
                client_id: client_id.unwrap_or_default(),
                client_secret: client_secret.unwrap_or_else(|| Secret::new("")),
                client_secret_param: param,
            })
        }
        ProviderKind::Oauth2 => {
            let client_id = required(ctx, "client_id", rc.client_id.clone(), errors);
            let auth = rc.auth.unwrap_or_default();
            let client_secret = match (auth, &rc.client_secret) {
                (ClientAuth::None, Some(_)) => {
                    errors.push(
                        ctx,
                        "`auth: none` is a public client: remove `client_secret`",
                    );
                    None
                }
                (ClientAuth::None, None) => None,
                (_, source) => {
                    required_secret(ctx, "client_secret", source, errors);
                    secret("client_secret", source, errors)
                }
            };
            let grant_kind = rc.grant.unwrap_or_default();
            let grant = match grant_kind {
                GrantKind::ClientCredentials => {
                    for (key, set) in [
                        ("refresh_token", rc.refresh_token.is_some()),
                        ("username", rc.username.is_some()),
                        ("password", rc.password.is_some()),
                    ] {
                        if set {
                            errors.push(
                                ctx,
                                format!("`{key}` does not apply to `grant: client_credentials`"),
                            );
                        }
                    }
                    oauth2::Grant::ClientCredentials
                }
                GrantKind::RefreshToken => {
                    required_secret(ctx, "refresh_token", &rc.refresh_token, errors);
                    oauth2::Grant::RefreshToken {
                        seed: secret("refresh_token", &rc.refresh_token, errors)
                            .unwrap_or_else(|| Secret::new("")),
                    }
                }
                GrantKind::Password => {
                    let username = required(ctx, "username", rc.username.clone(), errors);
                    required_secret(ctx, "password", &rc.password, errors);
                    oauth2::Grant::Password {
                        username: username.unwrap_or_default(),
                        password: secret("password", &rc.password, errors)
                            .unwrap_or_else(|| Secret::new("")),
                    }
                }
            };
            if grant_kind != GrantKind::Password
                && rc.username.is_some()
                && grant_kind != GrantKind::ClientCredentials
            {
                errors.push(ctx, "`username` only applies to `grant: password`");
            }
            let endpoint = match (&rc.token_url, &rc.issuer) {
                (Some(u), None) => {
                    oauth2::TokenEndpoint::Url(url(ctx, "token_url", Some(u), "", errors, warnings))
                }
                (None, Some(i)) => {
                    oauth2::TokenEndpoint::Issuer(url(ctx, "issuer", Some(i), "", errors, warnings))
                }
                (Some(_), Some(_)) => {
                    errors.push(ctx, "set `token_url` or `issuer` (discovery), not both");
                    oauth2::TokenEndpoint::Url(String::new())
                }
                (None, None) => {
                    errors.push(
                        ctx,
                        "`token_url` is required for provider oauth2 (or `issuer`, to discover it)",
                    );
                    oauth2::TokenEndpoint::Url(String::new())
                }
            };
            let params: Vec<(String, String)> =
                rc.params.clone().unwrap_or_default().into_iter().collect();
            for (key, _) in &params {
                const RESERVED: [&str; 9] = [
                    "grant_type",
                    "client_id",
                    "client_secret",
                    "refresh_token",
                    "username",
                    "password",
                    "scope",
                    "audience",
                    "resource",
                ];
                if RESERVED.contains(&key.as_str()) {
                    errors.push(
                        ctx,
                        format!(
                            "`params.{key}` is set by tokend itself; use the `{key}` key instead"
                        ),
                    );
                }
            }
            ProviderConfig::OAuth2(oauth2::OAuth2 {
                endpoint,
                client_id: client_id.unwrap_or_default(),
                client_secret,
                auth,
                grant,
                scope: rc.scope.clone().filter(|s| !s.is_empty()),
                audience: rc.audience.clone(),
                resource: rc.resource.clone(),
                params,
            })
        }
        ProviderKind::HttpJson => {
            let mut secrets_list = Vec::new();
            for (name, source) in rc.secrets.iter().flatten() {
                if name == http_json::REFRESH_PLACEHOLDER || name.is_empty() {
                    errors.push(
                        ctx,
                        format!("`secrets.{name}` is a reserved placeholder name"),
                    );
                }
                if let Some(value) =
                    secret(&format!("secrets.{name}"), &Some(source.clone()), errors)
                {
                    secrets_list.push((name.clone(), value));
                }
            }
            let known: Vec<&str> = rc
                .secrets
                .iter()
                .flatten()
                .map(|(n, _)| n.as_str())
                .collect();
            let mut request = |field: &str, raw: &Option<RawRequest>, allow_refresh: bool| {
                let raw = raw.as_ref()?;
                let body = match serde_json::to_value(&raw.body) {
                    Ok(b) => b,
                    Err(e) => {
                        errors.push(
                            ctx,
                            format!("`{field}.body` is not expressible as JSON: {e}"),
                        );
                        return None;
                    }
                };
                for name in http_json::placeholders(&body) {
                    let ok = known.contains(&name.as_str())
                        || (allow_refresh && name == http_json::REFRESH_PLACEHOLDER);
                    if !ok {
                        errors.push(
                            ctx,
                            format!("`{field}.body` uses {{{{{name}}}}}, which is not one of `secrets`{}", if allow_refresh { " or {{refresh_token}}" } else { "" }),
                        );
                    }
                }
                let url = url(
                    ctx,
                    &format!("{field}.url"),
                    Some(&raw.url),
                    "",
                    errors,
                    warnings,
                );
                Some(http_json::Request { url, body })
            };
            let login = request("login_request", &rc.login_request, false);
            let refresh = request("refresh_request", &rc.refresh_request, true);
            if rc.login_request.is_none() {
                errors.push(ctx, "provider http_json needs `login_request: {url, body}`");
            }
            if let Some(r) = &refresh {
                if !http_json::placeholders(&r.body)
                    .iter()
                    .any(|p| p == http_json::REFRESH_PLACEHOLDER)
                {
                    errors.push(ctx, "`refresh_request.body` never uses {{refresh_token}}");
                }
                if rc.refresh_token_pointer.is_none() {
                    errors.push(ctx, "`refresh_request` needs `refresh_token_pointer` to find the refresh token in answers");
                }
            }
            for (field, pointer) in [
                ("token_pointer", &rc.token_pointer),
                ("refresh_token_pointer", &rc.refresh_token_pointer),
                ("expires_in_pointer", &rc.expires_in_pointer),
            ] {
                if let Some(p) = pointer
                    && !p.starts_with('/')
                {
                    errors.push(
                        ctx,
                        format!("`{field}` `{p}` is not a JSON pointer; write it like /data/token"),
                    );
                }
            }
            ProviderConfig::HttpJson(http_json::HttpJson {
                login: login.unwrap_or(http_json::Request {
                    url: String::new(),
                    body: serde_json::Value::Null,
                }),
                refresh,
                secrets: secrets_list,
                token_pointer: rc
                    .token_pointer
                    .clone()
                    .unwrap_or_else(|| http_json::DEFAULT_TOKEN_POINTER.to_owned()),
                refresh_token_pointer: rc.refresh_token_pointer.clone(),
                expires_in_pointer: rc.expires_in_pointer.clone(),
            })
        }
    };

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
    let allowed: &[&str] = match rc.provider {
        ProviderKind::Vandar => &[
            "base_url",
            "refresh_token",
            "mobile",
            "password",
            "login_version",
        ],
        ProviderKind::Saba => &[
            "base_url",
            "username",
            "password",
            "virtual_number",
            "token_valid_days",
        ],
        ProviderKind::Yavapteke => &[
            "token_url",
            "client_id",
            "client_secret",
            "client_secret_param",
        ],
        ProviderKind::Oauth2 => &[
            "token_url",
            "issuer",
            "client_id",
            "client_secret",
            "scope",
            "auth",
            "grant",
            "audience",
            "resource",
            "params",
            "refresh_token",
            "username",
            "password",
        ],
        ProviderKind::HttpJson => &[
            "login_request",
            "refresh_request",
            "secrets",
            "token_pointer",
            "refresh_token_pointer",
            "expires_in_pointer",
        ],
    };
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

fn required(ctx: &str, field: &str, value: Option<String>, errors: &mut Errors) -> Option<String> {
    match value {
        Some(v) if !v.is_empty() => Some(v),
        Some(_) => {
            errors.push(ctx, format!("`{field}` is empty"));
            None
        }
        None => {
            errors.push(ctx, format!("`{field}` is required"));
            None
        }
    }
}

fn required_secret(ctx: &str, field: &str, value: &Option<SecretSource>, errors: &mut Errors) {
    if value.is_none() {
        errors.push(ctx, format!("`{field}` is required"));
    }
}

/// Reads secrets for one credential: relative files against the config's directory, a
/// warning for literals, an error naming the field for anything unreadable.
struct SecretReader<'a> {
    sources: &'a Sources<'a>,
    ctx: &'a str,
}

/// Where relative paths and secrets are resolved from.
struct Sources<'a> {
    base: &'a Path,
    env: &'a dyn Environment,
    secrets: Secrets,
}

impl SecretReader<'_> {
    fn read(
        &self,
        field: &str,
        source: &SecretSource,
        errors: &mut Errors,
        warnings: &mut Vec<String>,
    ) -> Option<Secret> {
        let ctx = self.ctx;
        if source.is_literal() {
            warnings.push(format!(
                "{ctx}: `{field}` is written in the config file; prefer {{file: ...}}, {{env: ...}} or {{credential: ...}}"
            ));
        }
        if self.sources.secrets == Secrets::Skip {
            return Some(Secret::new(""));
        }
        if let SecretSource::File(p) = source {
            let path = resolve(self.sources.base, p);
            if let Some(w) = readable_by_others(&path) {
                warnings.push(format!("{ctx}: `{field}`: {w}"));
            }
        }
        let source = match source {
            SecretSource::File(p) => SecretSource::File(resolve(self.sources.base, p)),
            other => other.clone(),
        };
        match source.resolve(self.sources.env) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(ctx, format!("`{field}`: {e}"));
                None
            }
        }
    }
}

/// A secret file any local user can read is a secret no longer; group-readable is a
/// deliberate choice (0640 for a group of readers) and passes.
fn readable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::metadata(path).ok()?.mode() & 0o7777;
    (mode & 0o004 != 0).then(|| {
        format!(
            "secret file `{}` is readable by other users (mode {mode:04o}); make it 0600, or 0640 for a group",
            path.display()
        )
    })
}

fn url(
    ctx: &str,
    field: &str,
    value: Option<&str>,
    default: &str,
    errors: &mut Errors,
    warnings: &mut Vec<String>,
) -> String {
    let text = value.unwrap_or(default);
    match reqwest::Url::parse(text) {
        Ok(u) if u.scheme() == "https" => {}
        Ok(u) if u.scheme() == "http" => {
            let host = u.host_str().unwrap_or("");
            let loopback = host == "localhost"
                || host
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                warnings.push(format!(
                    "{ctx}: `{field}` {text} is plain http: secrets and tokens cross the network unencrypted"
                ));
            }
        }
        Ok(u) => errors.push(
            ctx,
            format!("`{field}` {text} has scheme `{}`; use https", u.scheme()),
        ),
        Err(e) => errors.push(ctx, format!("`{field}` `{text}` is not a URL: {e}")),
    }
    text.to_owned()
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
    let pick = |f: fn(&RawRetry) -> Option<super::units::Dur>| {
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

fn build_output(
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

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn build_hook(h: &RawHook, base: &Path, ctx: &str, errors: &mut Errors) -> Option<Hook> {
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

fn check_unique_names(credentials: &[(String, Vec<Output>)], errors: &mut Errors) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (name, _) in credentials {
        *seen.entry(name).or_default() += 1;
    }
    let mut dups: Vec<_> = seen.into_iter().filter(|(_, n)| *n > 1).collect();
    dups.sort();
    for (name, n) in dups {
        errors.push(
            &format!("credential `{name}`"),
            format!("the name is used {n} times; names must be unique"),
        );
    }
}

/// Two outputs on one path (or a file inside a `dir` output, or anything inside the state
/// directory) would overwrite each other. Paths are compared as the filesystem resolves them
/// (symlinks followed as far as they exist), so a link into the state directory cannot smuggle
/// an output over a state file. Paths are indexed once, so ten thousand outputs cost ten
/// thousand lookups, not fifty million comparisons.
fn check_output_paths(
    credentials: &[(String, Vec<Output>)],
    state_dir: &Path,
    errors: &mut Errors,
) {
    let state_dir = resolved(state_dir);
    let mut by_path: HashMap<PathBuf, (&str, &Path)> = HashMap::new();
    let mut dirs: HashMap<PathBuf, (&str, &Path)> = HashMap::new();
    let mut all: Vec<(&str, &Path, PathBuf)> = Vec::new();
    let clash = |errors: &mut Errors, name: &str, path: &Path, other: &Path, other_name: &str| {
        errors.push(
            &format!("credential `{name}`"),
            format!(
                "output `{}` collides with output `{}` of credential `{other_name}`; two outputs cannot write the same path",
                path.display(),
                other.display()
            ),
        );
    };
    for (name, outputs) in credentials {
        for o in outputs {
            let written = o.path();
            let path = resolved(written);
            if path.starts_with(&state_dir) {
                let via = if path == normalize(written) {
                    String::new()
                } else {
                    format!(" (it resolves to `{}`)", path.display())
                };
                errors.push(
                    &format!("credential `{name}`"),
                    format!(
                        "output `{}` is inside state_dir `{}`{via}",
                        written.display(),
                        state_dir.display()
                    ),
                );
            }
            match by_path.get(&path) {
                Some((other_name, other)) => clash(errors, name, written, other, other_name),
                None => {
                    by_path.insert(path.clone(), (name, written));
                }
            }
            if matches!(o.target, Target::Dir { .. }) {
                dirs.insert(path.clone(), (name, written));
            }
            all.push((name, written, path));
        }
    }
    // Anything strictly inside a `dir` output: walk each path's ancestors.
    for (name, written, path) in &all {
        for ancestor in path.ancestors().skip(1) {
            if let Some((other_name, other)) = dirs.get(ancestor) {
                clash(errors, name, written, other, other_name);
            }
        }
    }
}

/// `p` as the filesystem will resolve it when tokend writes: the longest existing ancestor
/// canonicalized (symlinks followed), the rest appended lexically. Outputs and the state
/// directory are often created later, so a full `canonicalize` would fail.
fn resolved(p: &Path) -> PathBuf {
    let p = normalize(p);
    let mut rest = Vec::new();
    let mut cur = p.as_path();
    loop {
        if let Ok(real) = cur.canonicalize() {
            let mut out = real;
            for c in rest.iter().rev() {
                out.push(c);
            }
            return normalize(&out);
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                cur = parent;
            }
            _ => return p,
        }
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Lexical normalization (`a/./b/../c` → `a/c`), enough to catch two spellings of one path.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
