//! The bearer token tokend sends: a static one from a kubeconfig, or a file the kubelet
//! rotates (a bound ServiceAccount token lives about an hour), read again every period
//! and after a 401.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::KubeError;
use crate::secret::Secret;

pub(super) enum TokenSource {
    Static(Secret),
    File {
        path: std::path::PathBuf,
        reread: Duration,
        cached: Mutex<Option<(Secret, Instant)>>,
    },
}

/// The bearer token to send now: a token file is read again when `force` or when the
/// last read is older than its period.
pub(super) fn current(
    source: Option<&TokenSource>,
    force: bool,
) -> Result<Option<Secret>, KubeError> {
    match source {
        None => Ok(None),
        Some(TokenSource::Static(t)) => Ok(Some(t.clone())),
        Some(TokenSource::File {
            path,
            reread,
            cached,
        }) => {
            let mut cached = cached.lock().unwrap_or_else(|e| e.into_inner());
            if !force
                && let Some((token, at)) = &*cached
                && at.elapsed() < *reread
            {
                return Ok(Some(token.clone()));
            }
            match std::fs::read_to_string(path) {
                Ok(text) if !text.trim().is_empty() => {
                    let token = Secret::new(text.trim());
                    *cached = Some((token.clone(), Instant::now()));
                    Ok(Some(token))
                }
                // Mid-rotation or briefly unreadable: the last token may still be valid.
                _ if cached.is_some() => Ok(cached.as_ref().map(|(t, _)| t.clone())),
                Ok(_) => Err(KubeError::Setup {
                    reason: format!("the token file `{}` is empty", path.display()),
                }),
                Err(e) => Err(KubeError::Setup {
                    reason: format!(
                        "cannot read the token file `{}`: {}",
                        path.display(),
                        crate::util::io_reason(&e)
                    ),
                }),
            }
        }
    }
}

/// After a 401: reads a token file again; true if it now holds another token.
pub(super) fn changed(source: Option<&TokenSource>, sent: Option<&Secret>) -> bool {
    if !matches!(source, Some(TokenSource::File { .. })) {
        return false;
    }
    matches!(current(source, true), Ok(Some(fresh)) if Some(&fresh) != sent)
}

/// What to check after a 401 that a fresh read of the credentials did not cure.
pub(super) fn hint(source: Option<&TokenSource>) -> &'static str {
    match source {
        Some(TokenSource::File { .. }) => {
            "the token file was read again and still failed; check that the ServiceAccount exists and that its token is mounted and not expired"
        }
        Some(TokenSource::Static(_)) => {
            "the kubeconfig's token is wrong or expired; give tokend a current one"
        }
        None => {
            "no token is configured; check the client certificate or give the kubeconfig user a token"
        }
    }
}
