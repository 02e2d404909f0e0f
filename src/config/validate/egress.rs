//! `proxy` and `ca_file` (in `defaults` and per credential) → [`Egress`]. The CA bundle is
//! parsed here, so a file that is not PEM fails `check` instead of every refresh; the proxy
//! password is read as a secret like any other.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Errors, SecretReader, resolve};
use crate::config::raw::{RawDefaults, RawProxy};
use crate::net::{CaBundle, Egress, Proxy, ProxyUrl};

/// Builds each credential's egress from its own keys and the defaults. Each `ca_file` is
/// parsed once however many credentials share it, and the defaults are checked once, so a
/// bad default is one error, not one per credential.
pub(super) struct EgressBuilder {
    default_proxy: Option<Proxy>,
    default_ca: Option<Arc<CaBundle>>,
    cas: HashMap<PathBuf, Result<Arc<CaBundle>, String>>,
}

impl EgressBuilder {
    pub(super) fn new(
        defaults: &RawDefaults,
        reader: &SecretReader,
        errors: &mut Errors,
        warnings: &mut Vec<String>,
    ) -> EgressBuilder {
        let mut builder = EgressBuilder {
            default_proxy: None,
            default_ca: None,
            cas: HashMap::new(),
        };
        builder.default_proxy = defaults
            .proxy
            .as_ref()
            .and_then(|p| build_proxy(p, reader, errors, warnings));
        builder.default_ca = defaults
            .ca_file
            .as_ref()
            .and_then(|p| builder.ca(&resolve(reader.sources.base, p), reader.ctx, errors));
        builder
    }

    pub(super) fn credential(
        &mut self,
        proxy: Option<&RawProxy>,
        ca_file: Option<&Path>,
        reader: &SecretReader,
        errors: &mut Errors,
        warnings: &mut Vec<String>,
    ) -> Egress {
        let proxy = match proxy {
            Some(p) => build_proxy(p, reader, errors, warnings).unwrap_or_default(),
            None => self.default_proxy.clone().unwrap_or_default(),
        };
        let ca = match ca_file {
            Some(p) => self.ca(&resolve(reader.sources.base, p), reader.ctx, errors),
            None => self.default_ca.clone(),
        };
        Egress { ca, proxy }
    }

    fn ca(&mut self, path: &Path, ctx: &str, errors: &mut Errors) -> Option<Arc<CaBundle>> {
        let loaded = self
            .cas
            .entry(path.to_owned())
            .or_insert_with(|| CaBundle::load(path).map(Arc::new));
        match loaded {
            Ok(ca) => Some(ca.clone()),
            Err(e) => {
                errors.push(ctx, e.clone());
                None
            }
        }
    }
}

/// One `proxy` value; `None` after pushing an error that names `proxy`.
fn build_proxy(
    raw: &RawProxy,
    reader: &SecretReader,
    errors: &mut Errors,
    warnings: &mut Vec<String>,
) -> Option<Proxy> {
    let ctx = reader.ctx;
    let (field, text) = match raw {
        RawProxy::Text(t) if t.trim().eq_ignore_ascii_case("direct") => return Some(Proxy::Direct),
        RawProxy::Text(t) => ("proxy", t.as_str()),
        RawProxy::Auth(a) => ("proxy.url", a.url.as_str()),
    };
    let (url, had_password) = match ProxyUrl::parse(text) {
        Ok(parsed) => parsed,
        Err(e) => {
            errors.push(ctx, format!("`{field}` {} {e}", shown(text)));
            return None;
        }
    };
    if had_password {
        warnings.push(format!(
            "{ctx}: `{field}` has a password written in the URL; prefer `proxy: {{url: ..., username: ..., password: {{file: ...}}}}`"
        ));
    }
    let RawProxy::Auth(auth) = raw else {
        return Some(Proxy::Url(url));
    };
    let password = match &auth.password {
        Some(source) => Some(reader.read("proxy.password", source, errors, warnings)?),
        None => None,
    };
    match url.with_auth(auth.username.clone(), password) {
        Ok(url) => Some(Proxy::Url(url)),
        Err(e) => {
            errors.push(ctx, format!("`proxy`: {e}"));
            None
        }
    }
}

/// The proxy text for an error message, without a password someone wrote into it.
fn shown(text: &str) -> String {
    match reqwest::Url::parse(text.trim()) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(None);
            format!("`{url}` (password not shown)")
        }
        Ok(_) => format!("`{}`", text.trim()),
        Err(_) if text.contains('@') => "(value not shown: it holds an `@`)".to_owned(),
        Err(_) => format!("`{}`", text.trim()),
    }
}
