//! Redaction of provider text: a provider that echoes what it was sent (a password, a client
//! secret, a refresh token) in its error body must not get it into a log, the state file,
//! `status` or an HTTP endpoint.
//!
//! An echo rarely comes back in the form tokend holds: a form body is URL-encoded, a JSON
//! body JSON-escaped, Basic credentials Base64-encoded. [`Redactor`] knows every form a
//! request carried. It runs on the raw body *before* anything is cut or cleaned: cutting
//! first would leave the head of a secret that straddles the cut, and cleaning first would
//! change the bytes it has to find.
//!
//! Provider code finds the redactor of the request in flight through a task-local set by the
//! engine around each fetch ([`scope`]), so parse functions need no extra parameter and a new
//! provider cannot forget it.

use std::sync::Arc;

use base64::Engine as _;

/// Secrets shorter than this are not searched for: a three-letter password would redact
/// ordinary words from every message, and says little when it leaks in a sentence.
const MIN_LEN: usize = 4;

const MARK: &str = "[redacted]";

/// Every form of every secret a request carried, longest first (so a long form is replaced
/// whole before a shorter one inside it could split it).
#[derive(Default)]
pub struct Redactor {
    forms: Vec<String>,
}

impl Redactor {
    /// `secrets`: the raw values sent; `composites`: values the provider built from several
    /// of them and sent as one (the Base64 of `id:secret` in a Basic header).
    pub fn new<'a>(
        secrets: impl IntoIterator<Item = &'a str>,
        composites: impl IntoIterator<Item = String>,
    ) -> Redactor {
        let mut forms: Vec<String> = secrets.into_iter().flat_map(encodings).collect();
        forms.extend(composites);
        forms.retain(|f| f.len() >= MIN_LEN);
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        forms.dedup();
        Redactor { forms }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for form in &self.forms {
            if out.contains(form.as_str()) {
                out = out.replace(form.as_str(), MARK);
            }
        }
        out
    }
}

/// The forms in which a request may have carried `secret`, and in which an echo may return.
fn encodings(secret: &str) -> Vec<String> {
    let form: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let json = serde_json::to_string(secret).unwrap_or_default();
    vec![
        secret.to_owned(),
        // application/x-www-form-urlencoded (space as `+`) and percent-encoding (`%20`).
        form.replace('+', "%20"),
        form,
        // Inside a JSON string, and as tokend escapes control characters for a log line.
        json.trim_matches('"').to_owned(),
        crate::util::escape_control(secret),
        base64::engine::general_purpose::STANDARD.encode(secret),
    ]
}

tokio::task_local! {
    static CURRENT: Arc<Redactor>;
}

/// Runs `fut` (one provider fetch) with `redactor` as the one [`redact`] applies.
pub async fn scope<F: Future>(redactor: Arc<Redactor>, fut: F) -> F::Output {
    CURRENT.scope(redactor, fut).await
}

/// Redacts `text` with the redactor of the fetch in flight; unchanged outside a fetch.
pub fn redact(text: &str) -> String {
    CURRENT
        .try_with(|r| r.redact(text))
        .unwrap_or_else(|_| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = r#"Zq9X/p+q r&"w\z%"#;

    #[test]
    fn every_encoding_of_a_secret_is_redacted() {
        let r = Redactor::new([S], []);
        for echo in [
            S,
            "Zq9X%2Fp%2Bq+r%26%22w%5Cz%25",
            "Zq9X%2Fp%2Bq%20r%26%22w%5Cz%25",
            r#"Zq9X/p+q r&\"w\\z%"#,
            &base64::engine::general_purpose::STANDARD.encode(S),
        ] {
            let text = format!("before {echo} after");
            assert_eq!(r.redact(&text), "before [redacted] after", "{echo}");
        }
    }

    #[test]
    fn control_characters_in_a_secret_are_found_raw_and_escaped() {
        let r = Redactor::new(["ab\ncd"], []);
        assert_eq!(r.redact("x ab\ncd y"), "x [redacted] y");
        assert_eq!(r.redact(r"x ab\ncd y"), "x [redacted] y");
    }

    #[test]
    fn composites_and_short_secrets() {
        let r = Redactor::new(
            ["abc", "longer-secret"],
            ["dG9rZW5kOnNlY3JldA==".to_owned()],
        );
        assert_eq!(
            r.redact("abc longer-secret dG9rZW5kOnNlY3JldA=="),
            "abc [redacted] [redacted]"
        );
    }

    #[test]
    fn the_longest_form_wins() {
        // The raw secret is a prefix of its own percent-encoded form's tail here; the whole
        // form must go, not leave `%2F...` around a mark.
        let r = Redactor::new(["secret/1"], []);
        assert_eq!(r.redact("x=secret%2F1"), "x=[redacted]");
    }

    #[tokio::test]
    async fn the_scope_applies_inside_a_fetch_only() {
        let r = Arc::new(Redactor::new(["hunter22"], []));
        let inside = scope(r, async { redact("pw hunter22") }).await;
        assert_eq!(inside, "pw [redacted]");
        assert_eq!(redact("pw hunter22"), "pw hunter22");
    }
}
