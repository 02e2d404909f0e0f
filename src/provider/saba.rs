//! Saba Payamak (SMS, Iran): one authenticate call, a token bound to a virtual number that
//! lives `TokenValidDay` days (1..365), inside an envelope.
//!
//! The live API differs from its documentation (PROVIDERS.md, "In reality"): it answers
//! camelCase (`data.token`, the seed shows `Token`), `status` is a number (the seed shows a
//! string), and `errors` is `null` or a list of `{message, code, field, url}` objects. Every
//! key is read case-insensitively and both forms of `status` are accepted. Failures are
//! classified by Saba's result codes, so that a refused password is never re-sent at the
//! fast transient pace and an IP allow-list problem is named as the egress problem it is.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Answer, AnswerExt, Failure, FetchError, Fetched, Provider, RefreshUpdate, get_ci};
use crate::net::HttpClient;
use crate::secret::Secret;

pub const DEFAULT_BASE_URL: &str = "https://api.sabapayamak.com";
pub const DEFAULT_VALID_DAYS: u16 = 30;

#[derive(Clone, Debug, PartialEq)]
pub struct Saba {
    pub base_url: String,
    pub username: String,
    pub password: Secret,
    pub virtual_number: String,
    /// 1..=365, checked by the config layer.
    pub token_valid_days: u16,
}

impl Provider for Saba {
    fn documented_lifetime(&self) -> Option<Duration> {
        Some(Duration::from_secs(
            u64::from(self.token_valid_days) * 86_400,
        ))
    }

    fn secrets(&self) -> Vec<&Secret> {
        vec![&self.password]
    }

    fn identity(&self, h: &mut sha2::Sha256) {
        use super::identity::{display, secret, sep, text};
        text(h, &self.base_url);
        sep(h);
        text(h, &self.username);
        sep(h);
        secret(h, &self.password);
        sep(h);
        text(h, &self.virtual_number);
        sep(h);
        display(h, self.token_valid_days);
    }

    fn plan(&self) -> String {
        format!(
            "saba at {}: authenticate as {} for virtual number {}, tokens valid {} day(s)",
            self.base_url, self.username, self.virtual_number, self.token_valid_days
        )
    }

    async fn fetch(&self, http: &HttpClient, _: Option<&Secret>) -> Result<Fetched, Failure> {
        let url = format!(
            "{}/api/v1/user/authenticate",
            self.base_url.trim_end_matches('/')
        );
        let body = json!({
            "Username": self.username,
            "Password": self.password.expose(),
            "VirtualNumber": self.virtual_number,
            "TokenValidDay": self.token_valid_days,
        });
        Ok(parse_authenticate(&http.post_json(&url, &body).await?)?)
    }
}

/// What a Saba result code asks of the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// 401, 4001: the username, password or security key is wrong.
    BadCredentials,
    /// 16, 17: the account is disabled or expired; a person must act in Saba's panel.
    Account,
    /// 29, 4002: this source address or domain may not use the account: an egress problem.
    Egress,
    /// 4003, 4004: the virtual (sender) number is wrong or not usable.
    Sender,
    /// 23, 15, 500 (and any 5xx, 408, 429): Saba asks to retry.
    Transient,
}

/// The meaning of a result code from the vendor's SDK, and what it asks of the operator.
pub fn classify(code: i64) -> Option<(Verdict, &'static str)> {
    Some(match code {
        401 => (Verdict::BadCredentials, "security key expired or wrong"),
        4001 => (Verdict::BadCredentials, "wrong username or password"),
        16 => (Verdict::Account, "the account is disabled"),
        17 => (Verdict::Account, "the account has expired"),
        29 => (
            Verdict::Egress,
            "the source IP address may not use this service",
        ),
        4002 => (
            Verdict::Egress,
            "requests through this domain are not allowed",
        ),
        4003 => (Verdict::Sender, "wrong sender number"),
        4004 => (Verdict::Sender, "the sender number cannot be used"),
        23 => (Verdict::Transient, "Saba cannot process the request now"),
        15 => (Verdict::Transient, "Saba's server is busy"),
        500..=599 => (Verdict::Transient, "server error"),
        408 | 429 => (Verdict::Transient, "try again later"),
        _ => return None,
    })
}

/// Success needs HTTP 2xx, envelope `status` 200 (number or string) and a valid `data.token`
/// (any case); anything else is classified by its result codes and reported with Saba's
/// `message` and the messages and codes of `errors`, as one sentence.
pub fn parse_authenticate(answer: &Answer) -> Result<Fetched, FetchError> {
    let v = match serde_json::from_slice::<Value>(&answer.body) {
        Ok(v @ Value::Object(_)) => v,
        _ if answer.is_success() => {
            return Err(answer
                .json()
                .err()
                .unwrap_or_else(|| FetchError::BadAnswer {
                    status: answer.status,
                    reason: "the body is not Saba's envelope (not a JSON object)".into(),
                }));
        }
        _ if super::is_block_page(answer) => return Err(super::blocked(answer, "Saba")),
        _ => return Err(answer.error(super::provider_message(answer))),
    };
    let status = get_ci(&v, "status").and_then(super::code_of);
    if answer.is_success() && status == Some(200) {
        let data = get_ci(&v, "data").unwrap_or(&Value::Null);
        let key = data
            .as_object()
            .and_then(|o| o.keys().find(|k| k.eq_ignore_ascii_case("token")))
            .map(String::as_str)
            .unwrap_or("token");
        // Saba accepted the password here: a broken token is retried like an outage.
        let token = super::token_field(answer, data, &[key]).map_err(|e| match e {
            FetchError::BadAnswer { status, reason } => FetchError::BadAnswer {
                status,
                reason: reason.replace(&format!("`{key}`"), &format!("`data.{key}`")),
            },
            other => other,
        })?;
        return Ok(Fetched {
            token,
            token_type: "Bearer".into(),
            expires_in: None,
            refresh: RefreshUpdate::Unchanged,
            flow: "authenticate",
        });
    }
    Err(refusal(answer, &v, status))
}

/// The error for an envelope that is not a success, from its result codes: the codes in
/// `errors` first, then the envelope's `status`, then the HTTP status.
fn refusal(answer: &Answer, v: &Value, status: Option<i64>) -> FetchError {
    let mut codes: Vec<i64> = match get_ci(v, "errors") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|e| get_ci(e, "code").and_then(super::code_of))
            .collect(),
        _ => Vec::new(),
    };
    codes.extend(status.filter(|s| *s != 200));
    if !answer.is_success() {
        codes.push(i64::from(answer.status));
    }
    let known: Vec<(i64, Verdict, &str)> = codes
        .iter()
        .filter_map(|&c| classify(c).map(|(v, m)| (c, v, m)))
        .collect();
    // A code that needs a person wins over one that says "retry".
    let verdict = known
        .iter()
        .find(|(_, v, _)| *v != Verdict::Transient)
        .or_else(|| known.first());
    let detail = super::provider_message(answer);
    let Some(&(code, verdict, meaning)) = verdict else {
        return FetchError::Misconfigured(format!(
            "Saba gave an answer tokend does not understand (HTTP {}, envelope status {}): \
             {detail}; it may have refused the password, so tokend tries again only every \
             `retry.permanent`",
            answer.status,
            status.map_or_else(|| "missing".to_owned(), |s| s.to_string()),
        ));
    };
    let what = format!("{meaning} (Saba result {code}): {detail}");
    match verdict {
        Verdict::BadCredentials => FetchError::Rejected {
            status: answer.status,
            message: what,
        },
        Verdict::Account => FetchError::Misconfigured(format!(
            "Saba refused the account: {what}; a person must renew or enable it in Saba's \
             panel (tokend tries again only every `retry.permanent`)"
        )),
        Verdict::Egress => FetchError::Misconfigured(format!(
            "Saba refused this host's address: {what}; this is an egress problem, not bad \
             credentials: allow this address in Saba's panel, or send this credential's \
             requests through an allowed address with `proxy:`"
        )),
        Verdict::Sender => FetchError::Misconfigured(format!(
            "Saba refused the sender number: {what}; check `virtual_number`"
        )),
        Verdict::Transient => FetchError::Unavailable {
            url: answer.url.clone(),
            status: answer.status,
            message: what,
            retry_after: answer.retry_after,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_and_seed_shapes_both_succeed() {
        for body in [
            // Live: camelCase, numeric status, errors null.
            r#"{"status":200,"message":"ok","id":1,"data":{"id":1,"virtualNumber":"30001234","token":"eyJ.x.y"},"errors":null}"#,
            // Seed: PascalCase, string status, errors [].
            r#"{"status":"200","message":"عملیات با موفقیت انجام شد","id":1,"data":{"Id":"1","VirtualNumber":"30001234","Token":"eyJ.x.y"},"errors":[]}"#,
            // Envelope keys in PascalCase too.
            r#"{"Status":200,"Data":{"TOKEN":"eyJ.x.y"}}"#,
        ] {
            let f = parse_authenticate(&Answer::fake(200, body)).unwrap();
            assert_eq!(f.token.expose(), "eyJ.x.y", "{body}");
        }
    }

    fn class(e: &FetchError) -> &'static str {
        match e {
            FetchError::Rejected { .. } => "bad credentials",
            FetchError::Misconfigured(m) if m.contains("egress problem") => "egress",
            FetchError::Misconfigured(m) if m.contains("refused the account") => "account",
            FetchError::Misconfigured(m) if m.contains("sender number") => "sender",
            FetchError::Misconfigured(m) if m.contains("does not understand") => "unknown",
            e if e.is_transient() => "transient",
            _ => "other",
        }
    }

    #[test]
    fn result_codes_classify_the_refusal() {
        let obj = |code: &str| {
            format!(
                r#"{{"status":400,"message":"خطا","data":null,"errors":[{{"message":"m{code}","code":{code},"field":null,"url":null}}]}}"#
            )
        };
        let cases: &[(u16, String, &str)] = &[
            (200, obj("4001"), "bad credentials"),
            (401, obj("401"), "bad credentials"),
            (200, obj("16"), "account"),
            (200, obj("17"), "account"),
            (200, obj("29"), "egress"),
            (403, obj("4002"), "egress"),
            (200, obj("4003"), "sender"),
            (200, obj("4004"), "sender"),
            (200, obj("23"), "transient"),
            (200, obj("15"), "transient"),
            (500, obj("500"), "transient"),
            // Codes as strings, and the code only in the envelope status.
            (
                200,
                r#"{"status":"29","message":"x","errors":null}"#.into(),
                "egress",
            ),
            (
                200,
                r#"{"status":4001,"errors":null}"#.into(),
                "bad credentials",
            ),
            (200, r#"{"status":"500","message":"m"}"#.into(), "transient"),
            // A person-needing code wins over a retry code.
            (
                200,
                r#"{"status":400,"errors":[{"code":23},{"code":"16"}]}"#.into(),
                "account",
            ),
            // Unrecognised: the password may have been refused, so it is not transient.
            (
                200,
                r#"{"status":400,"message":"?","errors":null}"#.into(),
                "unknown",
            ),
            (200, r#"{"message":"no status at all"}"#.into(), "unknown"),
            (200, r#"{"status":999}"#.into(), "unknown"),
            (
                400,
                r#"{"status":400,"errors":[{"code":12345}]}"#.into(),
                "unknown",
            ),
            // Not an envelope at all: nothing reached Saba's application.
            (403, "<html>forbidden</html>".into(), "transient"),
            (400, "<html>bad request</html>".into(), "transient"),
            (451, "".into(), "transient"),
            (502, "<html>bad gateway</html>".into(), "transient"),
            (200, "<html>oops</html>".into(), "transient"),
            // Accepted, but the token is broken: retried like an outage.
            (
                200,
                r#"{"status":200,"data":{"token":""}}"#.into(),
                "transient",
            ),
        ];
        for (http, body, want) in cases {
            let e = parse_authenticate(&Answer::fake(*http, body)).unwrap_err();
            assert_eq!(class(&e), *want, "HTTP {http} {body}: {e}");
        }
    }

    #[test]
    fn errors_are_one_sentence_of_messages_and_codes() {
        let e = parse_authenticate(&Answer::fake(
            401,
            r#"{"status":401,"message":"نام کاربری یا رمز عبور اشتباه است","data":null,"errors":[{"message":"Username or password is incorrect","code":4001,"field":"password","url":"https://x/docs"}]}"#,
        ))
        .unwrap_err();
        assert!(!e.is_transient());
        assert_eq!(
            e.to_string(),
            "provider rejected the credentials (HTTP 401): wrong username or password (Saba result 4001): \
             نام کاربری یا رمز عبور اشتباه است: Username or password is incorrect (code 4001)"
        );
        let text = parse_authenticate(&Answer::fake(
            200,
            r#"{"status":400,"message":"denied","errors":[{"message":"IP not allowed","code":29,"field":null,"url":null}]}"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(!text.contains('{') && !text.contains("\"field\""), "{text}");
        assert!(text.contains("IP not allowed (code 29)"), "{text}");
        assert!(text.contains("`proxy:`"), "{text}");
    }

    #[test]
    fn empty_token_names_the_field() {
        for (body, field) in [
            (r#"{"status":"200","data":{"Token":""}}"#, "`data.Token`"),
            (r#"{"status":200,"data":{"token":""}}"#, "`data.token`"),
        ] {
            let e = parse_authenticate(&Answer::fake(200, body)).unwrap_err();
            assert!(
                e.to_string()
                    .contains(&format!("{field}: the token is empty")),
                "{e}"
            );
        }
    }
}
