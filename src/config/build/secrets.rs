//! Reading a credential's secrets: relative files against the config's directory, a
//! warning for literals and for files others can read.

use std::path::Path;

use super::paths::resolve;
use super::{Errors, Secrets, Sources};
use crate::secret::{Secret, SecretSource};

/// Reads secrets for one credential: relative files against the config's directory, a
/// warning for literals, an error naming the field for anything unreadable.
pub(in crate::config) struct SecretReader<'a> {
    pub(in crate::config) sources: &'a Sources<'a>,
    pub(in crate::config) ctx: &'a str,
}

impl SecretReader<'_> {
    pub(in crate::config) fn read(
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::secret::Environment;

    struct OneVar;
    impl Environment for OneVar {
        fn var(&self, name: &str) -> Option<String> {
            (name == "SET").then(|| "from-env".to_owned())
        }
    }

    /// The value read (exposed), errors and warnings.
    type Read = (Option<String>, Vec<String>, Vec<String>);

    /// What reading `source` as field `f` gives.
    fn read(base: &Path, secrets: Secrets, source: SecretSource) -> Read {
        let sources = Sources {
            base,
            env: &OneVar,
            secrets,
        };
        let reader = SecretReader {
            sources: &sources,
            ctx: "c",
        };
        let mut errors = Errors(Vec::new());
        let mut warnings = Vec::new();
        let got = reader.read("f", &source, &mut errors, &mut warnings);
        (got.map(|s| s.expose().to_owned()), errors.0, warnings)
    }

    #[test]
    fn sources_warnings_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        for (name, mode) in [("private", 0o600), ("group", 0o640), ("world", 0o644)] {
            std::fs::write(base.join(name), "s3cret\n").unwrap();
            std::fs::set_permissions(base.join(name), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        let world = base.join("world");
        let literal = "c: `f` is written in the config file; prefer {file: ...}, {env: ...} or {credential: ...}";
        let file = |p: &str| SecretSource::File(p.into());
        let some = |s: &str| Some(s.to_owned());
        let cases: Vec<(SecretSource, Read)> = vec![
            (
                SecretSource::Env("SET".into()),
                (some("from-env"), vec![], vec![]),
            ),
            (
                SecretSource::Env("UNSET".into()),
                (
                    None,
                    vec!["c: `f`: environment variable `UNSET` is not set".into()],
                    vec![],
                ),
            ),
            (
                SecretSource::Literal(Secret::new("lit")),
                (some("lit"), vec![], vec![literal.into()]),
            ),
            // Relative files are read from the config's directory.
            (file("private"), (some("s3cret"), vec![], vec![])),
            (file("group"), (some("s3cret"), vec![], vec![])),
            (
                file("world"),
                (
                    some("s3cret"),
                    vec![],
                    vec![format!(
                        "c: `f`: secret file `{}` is readable by other users (mode 0644); make it 0600, or 0640 for a group",
                        world.display()
                    )],
                ),
            ),
        ];
        for (source, want) in cases {
            let label = format!("{source:?}");
            assert_eq!(read(base, Secrets::Resolve, source), want, "{label}");
        }
    }

    #[test]
    fn skipped_secrets_are_not_read_but_literals_still_warn() {
        let base = Path::new("/nonexistent-tokend-test");
        assert_eq!(
            read(base, Secrets::Skip, SecretSource::Env("UNSET".into())),
            (Some(String::new()), vec![], vec![])
        );
        assert_eq!(
            read(base, Secrets::Skip, SecretSource::Literal(Secret::new("x")))
                .2
                .len(),
            1
        );
    }
}
