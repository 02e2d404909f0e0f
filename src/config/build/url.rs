//! URLs: https, or plain http with a warning unless the host is loopback.

use super::Errors;

pub(in crate::config) fn url(
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
