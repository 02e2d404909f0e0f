//! Proxy URLs as configured (`proxy:`) and as found in the environment (`HTTPS_PROXY` and
//! friends), shown without passwords.

use std::fmt;

use crate::secret::{Environment, Secret};

/// Proxy schemes tokend accepts (SPEC "Egress: proxies").
pub const PROXY_SCHEMES: [&str; 4] = ["http", "https", "socks5", "socks5h"];

/// A configured proxy; the URL holds no credentials, the password lives in a [`Secret`].
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyUrl {
    pub(super) url: reqwest::Url,
    pub(super) username: Option<String>,
    pub(super) password: Option<Secret>,
}

impl ProxyUrl {
    /// Parses a proxy URL. Credentials written into the URL are taken out of it; the
    /// second value is true when the URL carried a password (a literal secret).
    pub fn parse(text: &str) -> Result<(ProxyUrl, bool), String> {
        let mut url = reqwest::Url::parse(text.trim()).map_err(|e| {
            format!("is not a URL ({e}); write SCHEME://HOST:PORT with scheme http, https, socks5 or socks5h")
        })?;
        if !PROXY_SCHEMES.contains(&url.scheme()) {
            return Err(format!(
                "has scheme `{}`; use http, https, socks5 or socks5h (or `direct`)",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("has no host".to_owned());
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err("has a path or query; a proxy is only SCHEME://HOST:PORT".to_owned());
        }
        let username = (!url.username().is_empty()).then(|| percent_decode(url.username()));
        let password = url.password().map(|p| Secret::new(percent_decode(p)));
        let had_password = password.is_some();
        let _ = url.set_username("");
        let _ = url.set_password(None);
        // reqwest would pick 1080 too; setting it here makes `check` show the real port.
        if url.port().is_none() && url.scheme().starts_with("socks") {
            let _ = url.set_port(Some(1080));
        }
        Ok((
            ProxyUrl {
                url,
                username,
                password,
            },
            had_password,
        ))
    }

    /// Adds credentials given beside the URL; refuses a second set.
    pub fn with_auth(
        mut self,
        username: Option<String>,
        password: Option<Secret>,
    ) -> Result<ProxyUrl, String> {
        if username.is_none() && password.is_none() {
            return Ok(self);
        }
        if self.username.is_some() || self.password.is_some() {
            return Err(
                "the URL holds credentials and `username`/`password` are set too; give them once, beside the URL".to_owned(),
            );
        }
        if username.is_none() {
            return Err("`password` is set but `username` is missing".to_owned());
        }
        self.username = username;
        self.password = password;
        Ok(self)
    }

    /// SOCKS5 carries each of username and password in one length byte (RFC 1929).
    pub fn check_auth_lengths(&self) -> Result<(), String> {
        let too_long = |s: &str| s.len() > 255;
        if self.url.scheme().starts_with("socks")
            && (self.username.as_deref().is_some_and(too_long)
                || self.password.as_ref().is_some_and(|p| too_long(p.expose())))
        {
            return Err(
                "a SOCKS5 username or password is longer than 255 bytes (RFC 1929 allows no more)"
                    .to_owned(),
            );
        }
        Ok(())
    }

    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// The proxy as reqwest takes it: for every destination, loopback included, and with
    /// Basic (http/https) or username/password (SOCKS5) authentication.
    pub(super) fn to_reqwest(&self) -> Result<reqwest::Proxy, String> {
        let mut proxy = reqwest::Proxy::all(self.url.as_str())
            .map_err(|e| format!("cannot use proxy {self}: {e}"))?;
        if let Some(user) = &self.username {
            let password = self.password.as_ref().map_or("", |s| s.expose());
            proxy = proxy.basic_auth(user, password);
        }
        Ok(proxy)
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.url.as_str().trim_end_matches('/'))?;
        match (&self.username, &self.password) {
            (Some(u), Some(_)) => write!(f, " (user `{u}`, with a password)"),
            (Some(u), None) => write!(f, " (user `{u}`)"),
            _ => Ok(()),
        }
    }
}

/// `%XX` escapes of a URL's user-info back to bytes (the `url` crate keeps them encoded).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What reqwest will do with the proxy variables, described the way it reads them:
/// `HTTPS_PROXY` (else `ALL_PROXY`) for https targets, `HTTP_PROXY` (else `ALL_PROXY`) for
/// http ones, the upper-case name first, nothing at all under CGI (`REQUEST_METHOD` set).
pub fn describe_env(env: &dyn Environment) -> String {
    if env.var("REQUEST_METHOD").is_some() {
        return "direct (REQUEST_METHOD is set, so the proxy variables are ignored as under CGI)"
            .to_owned();
    }
    let first = |names: [&'static str; 2]| {
        names
            .into_iter()
            .find_map(|n| env.var(n).map(|v| (n, v)))
            .filter(|(_, v)| !v.trim().is_empty())
    };
    let all = first(["ALL_PROXY", "all_proxy"]);
    let https = first(["HTTPS_PROXY", "https_proxy"]).or_else(|| all.clone());
    let http = first(["HTTP_PROXY", "http_proxy"]).or_else(|| all.clone());
    if https.is_none() && http.is_none() {
        return "direct (no `proxy` configured, no HTTPS_PROXY, HTTP_PROXY or ALL_PROXY in the environment)".to_owned();
    }
    let show = |target: &str, v: &Option<(&str, String)>| match v {
        Some((name, value)) => format!("{target} targets via {name}={}", env_proxy_display(value)),
        None => format!("{target} targets direct"),
    };
    let mut text = if https == http {
        let (name, value) = https.as_ref().expect("one is set");
        format!("environment: {name}={}", env_proxy_display(value))
    } else {
        format!(
            "environment: {}, {}",
            show("https", &https),
            show("http", &http)
        )
    };
    if let Some((name, value)) = first(["NO_PROXY", "no_proxy"]) {
        text.push_str(&format!(" except {name}={value}"));
    }
    text
}

/// A proxy variable's value without its password, and a word if reqwest cannot use it
/// (it then goes direct without a sound).
fn env_proxy_display(value: &str) -> String {
    let with_scheme = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    match reqwest::Url::parse(&with_scheme) {
        Ok(mut url) => {
            let usable =
                ["http", "https", "socks4", "socks4a", "socks5", "socks5h"].contains(&url.scheme());
            let had_auth = !url.username().is_empty() || url.password().is_some();
            let _ = url.set_username("");
            let _ = url.set_password(None);
            let mut text = url.as_str().trim_end_matches('/').to_owned();
            if had_auth {
                text.push_str(" (with credentials)");
            }
            if !usable {
                text.push_str(" (unusable scheme: these requests go direct)");
            }
            text
        }
        Err(_) => "(not a URL: these requests go direct)".to_owned(),
    }
}
