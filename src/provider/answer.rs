//! Reading answers as the live APIs send them, beside what their documentation says: keys in
//! any case, `errors` in any of the shapes providers use, result codes as numbers or strings;
//! telling a block page in front of an API from the API's own verdict; and keeping a rotated
//! refresh token that arrives beside an unusable access token.

use std::time::Duration;

use serde_json::Value;

use super::FetchError;
use crate::secret::Secret;

pub use crate::net::client::Answer;

/// What a provider reads from an HTTP answer, in its own error terms.
pub trait AnswerExt {
    /// The body as JSON, or the reason it is not, phrased for an operator.
    fn json(&self) -> Result<Value, FetchError>;
    /// The standard classification of a non-success status.
    fn error(&self, message: String) -> FetchError;
    /// A short, printable excerpt of an error body for the log.
    fn excerpt(&self) -> String;
}

impl AnswerExt for Answer {
    fn json(&self) -> Result<Value, FetchError> {
        serde_json::from_slice(&self.body).map_err(|_| FetchError::BadAnswer {
            status: self.status,
            reason: format!("the body is not JSON ({})", body_kind(&self.body)),
        })
    }

    /// `rejected` builds the error for a 4xx that means "these credentials are wrong".
    fn error(&self, message: String) -> FetchError {
        match self.status {
            408 | 425 | 429 | 500..=599 => FetchError::Unavailable {
                url: self.url.clone(),
                status: self.status,
                message,
                retry_after: self.retry_after,
            },
            300..=399 => FetchError::Misconfigured(format!(
                "{} answered HTTP {} (a redirect); token requests are never redirected, so \
                 point the URL at the final address",
                self.url, self.status
            )),
            status => FetchError::Rejected { status, message },
        }
    }

    /// Providers put their reason there. Only used for non-2xx answers, which carry no
    /// token. Redacted before anything else, so a secret straddling the cut cannot leave
    /// its head behind.
    fn excerpt(&self) -> String {
        let text = crate::redact::redact(&String::from_utf8_lossy(&self.body));
        let clean = text.split_whitespace().collect::<Vec<_>>().join(" ");
        cut(&crate::util::escape_control(&clean), EXCERPT_CHARS)
    }
}

/// An error body excerpt is cut here; a provider's own message fields get more room.
const EXCERPT_CHARS: usize = 200;
const MESSAGE_CHARS: usize = 500;

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() > max {
        format!("{}…", text.chars().take(max).collect::<String>())
    } else {
        text.to_owned()
    }
}

/// The provider's own explanation of an error answer: the usual JSON fields when the body
/// is JSON, else a short excerpt of the body (Vandar's 401 body `{"unauthorized"}` is not JSON).
/// Keys are matched case-insensitively (Saba's ASP.NET answers camelCase or PascalCase), and
/// `errors` is shown as sentences, never as raw JSON: a list of strings or of Saba's
/// `{message, code, field, url}` objects, or Laravel's `{field: [messages]}`.
/// Redacted (see [`crate::redact`]) and with control characters escaped, then cut.
pub fn provider_message(answer: &Answer) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(&answer.body) else {
        return answer.excerpt();
    };
    let mut parts: Vec<String> = Vec::new();
    // OAuth2 (`error`, `error_description`), Saba and Vandar (`message`, `error`), Django
    // REST framework (`detail`).
    for key in ["error", "error_description", "message", "detail"] {
        if let Some(text) = get_ci(&v, key)
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty())
        {
            parts.push(one_line(text));
        }
    }
    let errors = error_list(&v);
    if !errors.is_empty() {
        parts.push(errors.join("; "));
    }
    if parts.is_empty() {
        answer.excerpt()
    } else {
        let text = crate::redact::redact(&parts.join(": "));
        cut(&crate::util::escape_control(&text), MESSAGE_CHARS)
    }
}

pub(crate) fn body_kind(body: &[u8]) -> String {
    let trimmed = body.trim_ascii_start();
    if trimmed.is_empty() {
        "it is empty".into()
    } else if trimmed.starts_with(b"<") {
        "it looks like HTML".into()
    } else if std::str::from_utf8(body).is_err() {
        "it is not even UTF-8".into()
    } else {
        format!("{} bytes of text", body.len())
    }
}

/// A string field reached by a path of keys, for parse functions.
pub fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// `expires_in` as providers send it: a number, or sometimes a numeric string.
pub fn expires_in(v: &Value) -> Option<Duration> {
    let secs = match v.get("expires_in")? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e10)))
}

/// Turns a raw token field into a validated secret, or a BadAnswer naming the field.
pub fn token_field(answer: &Answer, v: &Value, path: &[&str]) -> Result<Secret, FetchError> {
    let field = path.join(".");
    let bad = |reason: String| FetchError::BadAnswer {
        status: answer.status,
        reason,
    };
    match path.iter().try_fold(v, |v, k| v.get(k)) {
        None | Some(Value::Null) => Err(bad(format!("the answer has no `{field}`"))),
        Some(Value::String(s)) => {
            crate::token::validate_token(s).map_err(|e| bad(format!("`{field}`: {e}")))
        }
        Some(_) => Err(bad(format!("`{field}` is not a string"))),
    }
}

pub use crate::net::client::parse_retry_after;

/// The entries of an `errors` member as one-line texts: `"message (code 4001)"` for Saba's
/// objects, `"field: message"` for Laravel's map, strings as they are.
pub fn error_list(v: &Value) -> Vec<String> {
    match get_ci(v, "errors") {
        Some(Value::Array(items)) => items.iter().filter_map(error_entry).collect(),
        Some(Value::Object(map)) => map
            .iter()
            .flat_map(|(field, msgs)| {
                let msgs: Vec<String> = match msgs {
                    Value::Array(m) => m.iter().filter_map(Value::as_str).map(one_line).collect(),
                    Value::String(s) => vec![one_line(s)],
                    _ => Vec::new(),
                };
                msgs.into_iter().map(move |m| format!("{field}: {m}"))
            })
            .collect(),
        Some(Value::String(s)) if !s.trim().is_empty() => vec![one_line(s)],
        _ => Vec::new(),
    }
}

fn error_entry(e: &Value) -> Option<String> {
    match e {
        Value::String(s) if !s.trim().is_empty() => Some(one_line(s)),
        Value::Object(_) => {
            let message = get_ci(e, "message")
                .and_then(Value::as_str)
                .filter(|m| !m.trim().is_empty())
                .map(one_line);
            let code = get_ci(e, "code").and_then(code_of);
            match (message, code) {
                (Some(m), Some(c)) => Some(format!("{m} (code {c})")),
                (Some(m), None) => Some(m),
                (None, Some(c)) => Some(format!("code {c}")),
                (None, None) => None,
            }
        }
        _ => None,
    }
}

/// A result code sent as a number or a numeric string.
pub fn code_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Provider text without its surrounding blanks; control characters inside are escaped
/// (not dropped) when the whole message is, so that nothing is hidden from the operator.
pub(super) fn one_line(text: &str) -> String {
    text.trim().to_owned()
}

/// A member of a JSON object by name, exact spelling first, then ignoring ASCII case: Saba's
/// live API says `data.token` where its documentation says `Token`.
pub fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Whether a 4xx answer comes from something in front of the API (a geo-block, WAF or
/// proxy) rather than from the API itself: 403, 407 and 451 always, and any other 4xx whose
/// body is not a JSON object (an HTML page, nothing at all). The API never saw the request,
/// so a refresh token sent with it is still good and the failure is transient. 401, 408,
/// 425 and 429 are left to their own rules.
pub fn is_block_page(answer: &Answer) -> bool {
    match answer.status {
        401 | 408 | 425 | 429 => false,
        403 | 407 | 451 => true,
        400..=499 => !is_json_object(&answer.body),
        _ => false,
    }
}

pub fn is_json_object(body: &[u8]) -> bool {
    matches!(serde_json::from_slice::<Value>(body), Ok(Value::Object(_)))
}

/// The transient error for a block page in front of `provider`'s API.
pub fn blocked(answer: &Answer, provider: &str) -> FetchError {
    FetchError::Unavailable {
        url: answer.url.clone(),
        status: answer.status,
        message: format!(
            "blocked before reaching {provider} (egress IP, proxy or firewall?): the answer \
             is not the API's ({}{}), so nothing was spent and tokend retries",
            body_kind(&answer.body),
            match answer.excerpt() {
                e if e.is_empty() => String::new(),
                e => format!(": {e}"),
            }
        ),
        retry_after: answer.retry_after,
    }
}

/// A refresh token that a 2xx answer carries at `pointer` (a JSON pointer), valid as a
/// token. Read when the rest of the answer is unusable: the provider has rotated the chain
/// anyway, and the token it sent must not be lost with the access token beside it.
pub fn salvage_refresh_token(answer: &Answer, pointer: &str) -> Option<Secret> {
    if !answer.is_success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&answer.body).ok()?;
    let raw = v.pointer(pointer)?.as_str()?;
    crate::token::validate_token(raw).ok()
}

/// A fetch that failed, with the refresh token the provider rotated on the way if it did.
#[derive(Debug)]
pub struct Failure {
    pub error: FetchError,
    /// The chain's new refresh token from an answer whose access token was unusable; the
    /// one that was sent is spent, so this one must be kept.
    pub rotated: Option<Secret>,
}

impl From<FetchError> for Failure {
    fn from(error: FetchError) -> Self {
        Failure {
            error,
            rotated: None,
        }
    }
}

impl From<crate::net::client::SendError> for Failure {
    fn from(e: crate::net::client::SendError) -> Self {
        FetchError::from(e).into()
    }
}

impl Failure {
    /// `error`, keeping the refresh token found at `pointer` in `answer` if there is one.
    pub fn salvaging(error: FetchError, answer: &Answer, pointer: &str) -> Failure {
        Failure {
            rotated: salvage_refresh_token(answer, pointer),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_classification() {
        assert!(Answer::fake(500, "").error(String::new()).is_transient());
        assert!(Answer::fake(503, "").error(String::new()).is_transient());
        assert!(Answer::fake(429, "").error(String::new()).is_transient());
        assert!(!Answer::fake(400, "").error(String::new()).is_transient());
        assert!(!Answer::fake(401, "").error(String::new()).is_transient());
        assert!(!Answer::fake(302, "").error(String::new()).is_transient());
    }

    #[test]
    fn non_json_is_described_not_parsed() {
        let e = Answer::fake(200, "<html>502</html>").json().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unusable answer from provider (HTTP 200): the body is not JSON (it looks like HTML)"
        );
        assert!(
            Answer::fake(200, "")
                .json()
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }

    #[test]
    fn excerpt_is_single_line_and_short() {
        let a = Answer::fake(401, "{\"unauthorized\"}\n\r\t");
        assert_eq!(a.excerpt(), "{\"unauthorized\"}");
        assert_eq!(
            Answer::fake(500, &"x".repeat(500))
                .excerpt()
                .chars()
                .count(),
            201
        );
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("99999999"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn expires_in_forms() {
        let v: Value = serde_json::json!({"expires_in": 3600});
        assert_eq!(expires_in(&v), Some(Duration::from_secs(3600)));
        let v: Value = serde_json::json!({"expires_in": "60"});
        assert_eq!(expires_in(&v), Some(Duration::from_secs(60)));
        let v: Value = serde_json::json!({"expires_in": -5});
        assert_eq!(expires_in(&v), None);
    }

    #[test]
    fn token_field_errors_name_the_field() {
        let a = Answer::fake(200, "");
        let v = serde_json::json!({"data": {"token": 5}, "t": ""});
        let e = token_field(&a, &v, &["data", "token"]).unwrap_err();
        assert!(
            e.to_string().contains("`data.token` is not a string"),
            "{e}"
        );
        let e = token_field(&a, &v, &["t"]).unwrap_err();
        assert!(e.to_string().contains("`t`: the token is empty"), "{e}");
        let e = token_field(&a, &v, &["missing"]).unwrap_err();
        assert!(e.to_string().contains("no `missing`"), "{e}");
    }

    #[test]
    fn errors_in_every_shape_become_sentences() {
        let cases = [
            (json!({"errors": null}), vec![]),
            (json!({"errors": []}), vec![]),
            (json!({"errors": ["plain"]}), vec!["plain"]),
            (
                json!({"Errors": [{"message": "IP not allowed", "code": 29, "field": null, "url": "u"}]}),
                vec!["IP not allowed (code 29)"],
            ),
            (
                json!({"errors": [{"Message": "m", "Code": "4001"}]}),
                vec!["m (code 4001)"],
            ),
            (json!({"errors": [{"code": 23}]}), vec!["code 23"]),
            (json!({"errors": [{"field": "x"}]}), vec![]),
            (
                json!({"errors": {"refreshtoken": ["is invalid", "has expired"]}}),
                vec!["refreshtoken: is invalid", "refreshtoken: has expired"],
            ),
            (json!({"errors": "one string"}), vec!["one string"]),
        ];
        for (v, want) in cases {
            assert_eq!(error_list(&v), want, "{v}");
        }
    }

    #[test]
    fn block_pages_are_told_from_the_apis_answers() {
        let cases = [
            (403, "{\"message\":\"forbidden\"}", true),
            (407, "", true),
            (451, "", true),
            (400, "<html>bad request</html>", true),
            (404, "<html>not found</html>", true),
            (400, "", true),
            (400, "not json", true),
            (400, "[1,2]", true),
            (400, "{\"error\":\"invalid_grant\"}", false),
            (422, "{\"message\":\"invalid\"}", false),
            (401, "{\"unauthorized\"}", false),
            (401, "<html>401</html>", false),
            (429, "<html>slow</html>", false),
            (500, "<html>oops</html>", false),
            (200, "<html>ok</html>", false),
        ];
        for (status, body, block) in cases {
            assert_eq!(
                is_block_page(&Answer::fake(status, body)),
                block,
                "HTTP {status} {body}"
            );
        }
        let e = blocked(&Answer::fake(403, "<html>Access denied</html>"), "Vandar");
        assert!(e.is_transient());
        let text = e.to_string();
        assert!(
            text.contains(
                "HTTP 403: blocked before reaching Vandar (egress IP, proxy or firewall?)"
            ) && text.contains("Access denied"),
            "{text}"
        );
    }

    #[test]
    fn a_valid_refresh_token_is_salvaged_from_a_2xx_only() {
        let body = r#"{"access_token":"","refresh_token":"def502next"}"#;
        assert_eq!(
            salvage_refresh_token(&Answer::fake(200, body), "/refresh_token"),
            Some(Secret::new("def502next"))
        );
        assert_eq!(
            salvage_refresh_token(&Answer::fake(400, body), "/refresh_token"),
            None
        );
        for bad in [
            r#"{"refresh_token":""}"#,
            r#"{"refresh_token":"a b"}"#,
            r#"{"refresh_token":5}"#,
            "not json",
        ] {
            assert_eq!(
                salvage_refresh_token(&Answer::fake(200, bad), "/refresh_token"),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn keys_match_in_any_case_exact_first() {
        let v = json!({"Token": "a", "token": "b", "DATA": {"x": 1}});
        assert_eq!(get_ci(&v, "token"), Some(&json!("b")));
        assert_eq!(get_ci(&v, "data"), Some(&json!({"x": 1})));
        assert_eq!(get_ci(&json!([1]), "data"), None);
        assert_eq!(code_of(&json!(" 29 ")), Some(29));
        assert_eq!(code_of(&json!(4001)), Some(4001));
        assert_eq!(code_of(&json!(null)), None);
    }
}
