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

#[cfg(test)]
mod tests {
    use super::super::testing::run;
    use super::*;

    #[test]
    fn schemes_and_loopback() {
        const PLAIN: &str = "is plain http: secrets and tokens cross the network unencrypted";
        // (url, errors, warnings)
        let cases: &[(&str, &[String], &[String])] = &[
            ("https://api.example/t", &[], &[]),
            ("http://localhost:8080/t", &[], &[]),
            ("http://127.0.0.1/t", &[], &[]),
            ("http://[::1]:9/t", &[], &[]),
            (
                "http://api.example/t",
                &[],
                &[format!("c: `f` http://api.example/t {PLAIN}")],
            ),
            (
                "http://10.0.0.1/t",
                &[],
                &[format!("c: `f` http://10.0.0.1/t {PLAIN}")],
            ),
            (
                "ftp://api.example/t",
                &["c: `f` ftp://api.example/t has scheme `ftp`; use https".to_owned()],
                &[],
            ),
            (
                "api.example/t",
                &["c: `f` `api.example/t` is not a URL: relative URL without a base".to_owned()],
                &[],
            ),
        ];
        for (text, want_errors, want_warnings) in cases {
            let (got, errors, warnings) =
                run(|_, errors, warnings| url("c", "f", Some(text), "", errors, warnings));
            assert_eq!(got, *text);
            assert_eq!(errors, *want_errors, "{text}");
            assert_eq!(warnings, *want_warnings, "{text}");
        }
    }

    #[test]
    fn the_default_applies_when_unset() {
        let (got, errors, _) = run(|_, e, w| url("c", "f", None, "https://d/t", e, w));
        assert_eq!((got.as_str(), errors.len()), ("https://d/t", 0));
    }
}
