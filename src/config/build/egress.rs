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
            .and_then(|p| builder.ca(&resolve(reader.sources.base, p), reader, errors, warnings));
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
            Some(p) => self.ca(&resolve(reader.sources.base, p), reader, errors, warnings),
            None => self.default_ca.clone(),
        };
        Egress { ca, proxy }
    }

    fn ca(
        &mut self,
        path: &Path,
        reader: &SecretReader,
        errors: &mut Errors,
        warnings: &mut Vec<String>,
    ) -> Option<Arc<CaBundle>> {
        let ctx = reader.ctx;
        // Offline (`check --offline` on a CI host, `status` as another user) the bundle may
        // not be there or readable: say so, but judge its content only where it can be read.
        // (Opened through fsread: a FIFO must not hang `status`, and is an error below.)
        if reader.sources.secrets == super::Secrets::Skip
            && let Err(e @ crate::fsread::ReadError::Io(_)) = crate::fsread::open_regular(path)
        {
            warnings.push(format!(
                "{ctx}: ca_file `{}` not checked offline: {e}",
                path.display(),
            ));
            return None;
        }
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
    let url = match raw {
        RawProxy::Text(_) => Ok(url),
        RawProxy::Auth(auth) => {
            let password = match &auth.password {
                Some(source) => Some(reader.read("proxy.password", source, errors, warnings)?),
                None => None,
            };
            url.with_auth(auth.username.clone(), password)
        }
    };
    match url.and_then(|u| u.check_auth_lengths().map(|()| u)) {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, Secrets, parse};
    use crate::net::{Egress, Proxy};
    use crate::secret::Environment;

    struct Env;
    impl Environment for Env {
        fn var(&self, name: &str) -> Option<String> {
            (name == "PROXY_PW").then(|| "s3cret:@/".to_owned())
        }
    }

    /// `defaults` lines, then credentials `a`, `b`, ... each with its extra lines.
    fn config(defaults: &str, creds: &[&str]) -> String {
        let mut text = format!("state_dir: /s\ndefaults:\n  timeout: 5s\n{defaults}credentials:\n");
        for (i, extra) in creds.iter().enumerate() {
            let name = (b'a' + i as u8) as char;
            text.push_str(&format!(
                "  - name: {name}\n    provider: yavapteke\n    client_id: x\n    client_secret: {{ env: PROXY_PW }}\n{extra}    outputs: [ {{ file: /o/{name} }} ]\n"
            ));
        }
        text
    }

    fn build(text: &str) -> Result<Config, String> {
        parse(text, Path::new("/etc/t.yaml"), &Env, Secrets::Resolve).map_err(|e| e.to_string())
    }

    fn shown(e: &Egress) -> String {
        e.describe(&Env)
    }

    #[test]
    fn credentials_inherit_or_override_the_default_proxy() {
        let text = config(
            "  proxy: socks5h://10.8.0.1\n",
            &[
                "",
                "    proxy: direct\n",
                "    proxy: { url: \"http://p:3128\", username: u, password: { env: PROXY_PW } }\n",
            ],
        );
        let c = build(&text).unwrap();
        let egress: Vec<String> = c.credentials.iter().map(|c| shown(&c.egress)).collect();
        assert_eq!(
            egress,
            [
                "proxy socks5h://10.8.0.1:1080",
                "direct (`proxy: direct`; proxy variables in the environment are ignored)",
                "proxy http://p:3128 (user `u`, with a password)",
            ]
        );
        assert_eq!(
            c.credentials[2].egress.secret().unwrap().expose(),
            "s3cret:@/"
        );
        assert!(
            c.warnings.iter().all(|w| !w.contains("proxy")),
            "{:?}",
            c.warnings
        );
        // No proxy anywhere: the environment decides, at request time.
        let c = build(&config("", &[""])).unwrap();
        assert_eq!(c.credentials[0].egress, Egress::default());
        assert_eq!(c.credentials[0].egress.proxy, Proxy::Env);
    }

    #[test]
    fn a_bad_default_is_one_error_and_bad_credentials_each_name_themselves() {
        let text = config(
            "  proxy: gopher://p:70\n  ca_file: /nonexistent/ca.pem\n",
            &["", "", "    proxy: [1]\n"],
        );
        assert_eq!(
            build(&text).unwrap_err(),
            "invalid config `/etc/t.yaml`: line 21 column 12: credentials[2].proxy: invalid type: sequence, expected a proxy URL, `direct`, or a map with `url`, `username`, `password`"
        );
        let text = config(
            "  proxy: gopher://p:70\n  ca_file: /nonexistent/ca.pem\n",
            &["", "", "    proxy: { url: \"http://p:1\", user: x }\n"],
        );
        assert!(
            build(&text)
                .unwrap_err()
                .contains("unknown key `user`; did you mean `username`?"),
        );
        let text = config(
            "  proxy: gopher://p:70\n  ca_file: /nonexistent/ca.pem\n",
            &["", "", "    proxy: \"http://u:hunter22@p:1/x\"\n"],
        );
        assert_eq!(
            build(&text).unwrap_err(),
            "invalid config `/etc/t.yaml` (3 problems):\n  \
             - `defaults`: `proxy` `gopher://p:70` has scheme `gopher`; use http, https, socks5 or socks5h (or `direct`)\n  \
             - `defaults`: cannot read ca_file `/nonexistent/ca.pem`: no such file or directory\n  \
             - credential `c` (line 17): `proxy` `http://u@p:1/x` (password not shown) has a path or query; a proxy is only SCHEME://HOST:PORT"
        );
    }

    #[test]
    fn a_password_in_the_url_works_and_warns() {
        let c = build(&config("", &["    proxy: http://me:pa%40ss@p:1\n"])).unwrap();
        assert_eq!(c.credentials[0].egress.secret().unwrap().expose(), "pa@ss");
        assert!(
            c.warnings.iter().any(|w| w
                .starts_with("credential `a` (line 5): `proxy` has a password written in the URL")),
            "{:?}",
            c.warnings
        );
    }
}
