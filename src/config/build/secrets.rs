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
