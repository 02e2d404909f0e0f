//! Secrets: a redacting wrapper that holds a secret from the moment it is read, and the
//! four places the configuration may say a secret lives (file, env, systemd credential, literal).

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use sha2::{Digest, Sha256};

/// A secret value: passwords, client secrets, refresh tokens and access tokens alike.
///
/// Debug and Display print `[redacted]`; the only way to the bytes is [`Secret::expose`],
/// so every place that sends a secret somewhere is greppable.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// Eight hex digits of SHA-256: enough to tell two tokens apart in a log, useless to
    /// an attacker for tokens with real entropy.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.expose())
    }
}

/// The short fingerprint used in logs and state bookkeeping.
pub fn fingerprint(value: &str) -> String {
    short_fingerprint(Sha256::new_with_prefix(value.as_bytes()))
}

/// The short fingerprint of what was fed into `hasher`, for values hashed part by part.
pub fn short_fingerprint(hasher: Sha256) -> String {
    hasher.finalize()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

/// Where the configuration says a secret lives, before it is read.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
    Credential(String),
    /// A plain string in the config file; accepted, but `check` warns about it.
    Literal(Secret),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(p) => write!(f, "file {}", p.display()),
            SecretSource::Env(n) => write!(f, "env {n}"),
            SecretSource::Credential(n) => write!(f, "credential {n}"),
            SecretSource::Literal(_) => f.write_str("literal [redacted]"),
        }
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What the process environment offers to secret resolution; injected so tests do not
/// have to mutate the real environment.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl SecretSource {
    pub fn is_literal(&self) -> bool {
        matches!(self, SecretSource::Literal(_))
    }

    /// Reads the secret. Errors are one sentence naming the file or variable, without
    /// the caller's context (the config layer adds the credential and field).
    pub fn resolve(&self, env: &dyn Environment) -> Result<Secret, String> {
        match self {
            SecretSource::Literal(s) => non_empty(s.clone(), "the literal value"),
            SecretSource::File(path) => read_secret_file(path),
            SecretSource::Env(name) => match env.var(name) {
                Some(v) => non_empty(Secret::new(v), &format!("environment variable `{name}`")),
                None => Err(format!("environment variable `{name}` is not set")),
            },
            SecretSource::Credential(name) => match env.var("CREDENTIALS_DIRECTORY") {
                Some(dir) => read_secret_file(&Path::new(&dir).join(name)),
                None => Err(format!(
                    "`{{credential: {name}}}` needs $CREDENTIALS_DIRECTORY, which is not set \
                     (run under systemd with LoadCredential={name}:PATH)"
                )),
            },
        }
    }
}

fn non_empty(secret: Secret, what: &str) -> Result<Secret, String> {
    if secret.is_empty() {
        Err(format!("{what} is empty"))
    } else {
        Ok(secret)
    }
}

fn read_secret_file(path: &Path) -> Result<Secret, String> {
    match crate::fsread::read(path, crate::fsread::SECRET_LIMIT) {
        Ok(bytes) => {
            let mut text = String::from_utf8(bytes)
                .map_err(|_| format!("secret file `{}` is not valid UTF-8", path.display()))?;
            // One trailing newline is what `echo secret > file` leaves; nothing else is
            // trimmed, because some secrets legitimately end in whitespace.
            if text.ends_with('\n') {
                text.pop();
            }
            non_empty(
                Secret::new(text),
                &format!("secret file `{}`", path.display()),
            )
        }
        Err(e @ crate::fsread::ReadError::Io(_)) => {
            Err(format!("cannot read secret file `{}`: {e}", path.display()))
        }
        Err(e) => Err(format!("secret file `{}` {e}", path.display())),
    }
}

impl<'de> serde::Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SourceVisitor)
    }
}

struct SourceVisitor;

const SECRET_FORMS: &str = "a string, or one of {file: PATH}, {env: NAME}, {credential: NAME}";

impl<'de> Visitor<'de> for SourceVisitor {
    type Value = SecretSource;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SECRET_FORMS)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretSource, E> {
        Ok(SecretSource::Literal(Secret::new(v)))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<SecretSource, E> {
        Ok(SecretSource::Literal(Secret::new(v)))
    }

    // A numeric password written unquoted in YAML is still a password.
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<SecretSource, E> {
        Ok(SecretSource::Literal(Secret::new(v.to_string())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<SecretSource, E> {
        Ok(SecretSource::Literal(Secret::new(v.to_string())))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretSource, A::Error> {
        let mut found: Option<SecretSource> = None;
        while let Some(key) = map.next_key::<String>()? {
            if found.is_some() {
                return Err(de::Error::custom(format!(
                    "a secret takes exactly one key, found a second one `{key}`"
                )));
            }
            let value: String = map.next_value()?;
            found = Some(match key.as_str() {
                "file" => SecretSource::File(PathBuf::from(value)),
                "env" => SecretSource::Env(value),
                "credential" => SecretSource::Credential(value),
                other => {
                    let hint = crate::util::did_you_mean(other, &["file", "env", "credential"]);
                    return Err(de::Error::custom(format!(
                        "unknown secret source `{other}`{hint}; a secret is {SECRET_FORMS}"
                    )));
                }
            });
        }
        found.ok_or_else(|| de::Error::custom(format!("empty secret; a secret is {SECRET_FORMS}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeEnv(HashMap<&'static str, String>);
    impl Environment for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-canary");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        let src = SecretSource::Literal(s);
        assert!(!format!("{src:?}").contains("hunter2"));
    }

    #[test]
    fn file_secret_loses_exactly_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, " pass word \n\n").unwrap();
        let s = SecretSource::File(p)
            .resolve(&FakeEnv(HashMap::new()))
            .unwrap();
        assert_eq!(s.expose(), " pass word \n");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = SecretSource::File("/nonexistent/secret".into())
            .resolve(&FakeEnv(HashMap::new()))
            .unwrap_err();
        assert_eq!(
            err,
            "cannot read secret file `/nonexistent/secret`: no such file or directory"
        );
    }

    #[test]
    fn credential_reads_from_credentials_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "from-systemd\n").unwrap();
        let env = FakeEnv(HashMap::from([(
            "CREDENTIALS_DIRECTORY",
            dir.path().display().to_string(),
        )]));
        let s = SecretSource::Credential("pw".into()).resolve(&env).unwrap();
        assert_eq!(s.expose(), "from-systemd");
        let err = SecretSource::Credential("pw".into())
            .resolve(&FakeEnv(HashMap::new()))
            .unwrap_err();
        assert!(err.contains("$CREDENTIALS_DIRECTORY"), "{err}");
    }

    #[test]
    fn env_secret_missing_and_empty_are_errors() {
        let env = FakeEnv(HashMap::from([("EMPTY", String::new())]));
        assert_eq!(
            SecretSource::Env("NOPE".into()).resolve(&env).unwrap_err(),
            "environment variable `NOPE` is not set"
        );
        assert_eq!(
            SecretSource::Env("EMPTY".into()).resolve(&env).unwrap_err(),
            "environment variable `EMPTY` is empty"
        );
    }

    #[test]
    fn fingerprint_is_short_and_stable() {
        assert_eq!(fingerprint("abc"), "ba7816bf");
    }
}
