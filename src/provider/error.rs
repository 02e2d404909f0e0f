//! Why a fetch failed, in the terms the schedule needs: transient (retried fast) or
//! permanent (a person must act, retried slowly), with the provider's own words redacted.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot reach {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("no answer from {url} within {}", humantime::format_duration(*.timeout))]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered HTTP {status}{}", detail(.message))]
    Unavailable {
        url: String,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("provider rejected the credentials (HTTP {status}){}", detail(.message))]
    Rejected { status: u16, message: String },
    #[error(
        "provider rejected the refresh token (HTTP {status}){}; {}",
        detail(.message),
        if *.login_configured { "falling back to login" } else {
            "it cannot be renewed without a person: create a new token in the provider's dashboard and put its refresh token in the config"
        }
    )]
    RefreshRejected {
        status: u16,
        message: String,
        login_configured: bool,
    },
    #[error("unusable answer from provider (HTTP {status}): {reason}")]
    BadAnswer { status: u16, reason: String },
    #[error("{0}")]
    Misconfigured(String),
}

impl From<crate::net::client::SendError> for FetchError {
    fn from(e: crate::net::client::SendError) -> FetchError {
        use crate::net::client::{MAX_BODY_BYTES, SendError};
        match e {
            SendError::Timeout { url, timeout } => FetchError::Timeout { url, timeout },
            SendError::Connect { url, reason } => FetchError::Connect { url, reason },
            SendError::Oversized { status } => FetchError::BadAnswer {
                status,
                reason: format!("the body is larger than {} KiB", MAX_BODY_BYTES / 1024),
            },
        }
    }
}

fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl FetchError {
    /// Redacts the error's texts with `redactor` (built for the request that failed), a
    /// second pass after the one in [`provider_message`]: URLs and transport errors can echo
    /// what was sent too.
    pub fn redact(&mut self, redactor: &crate::redact::Redactor) {
        let texts: Vec<&mut String> = match self {
            FetchError::Connect { url, reason } => vec![url, reason],
            FetchError::Timeout { url, .. } => vec![url],
            FetchError::Unavailable { url, message, .. } => vec![url, message],
            FetchError::Rejected { message, .. } | FetchError::RefreshRejected { message, .. } => {
                vec![message]
            }
            FetchError::BadAnswer { reason, .. } => vec![reason],
            FetchError::Misconfigured(m) => vec![m],
        };
        for text in texts {
            *text = crate::util::escape_control(&redactor.redact(text));
        }
    }

    /// Transient errors are retried with fast backoff; permanent ones (a person must act)
    /// slowly, so that an account is never locked by a retry storm.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            FetchError::Connect { .. }
                | FetchError::Timeout { .. }
                | FetchError::Unavailable { .. }
                | FetchError::BadAnswer { .. }
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            FetchError::Unavailable { status, .. }
            | FetchError::Rejected { status, .. }
            | FetchError::RefreshRejected { status, .. }
            | FetchError::BadAnswer { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::provider::{Answer, AnswerExt, provider_message};

    #[test]
    fn redact_hides_echoed_secrets() {
        let mut e = Answer::fake(
            400,
            r#"{"error":"password hunter22 is wrong for def502abc"}"#,
        )
        .error(provider_message(&Answer::fake(
            400,
            r#"{"error":"password hunter22 is wrong for def502abc"}"#,
        )));
        e.redact(&crate::redact::Redactor::new(
            ["hunter22", "def502abc", "x"],
            [],
        ));
        let text = e.to_string();
        assert!(
            !text.contains("hunter22") && !text.contains("def502abc"),
            "{text}"
        );
        assert!(
            text.contains("password [redacted] is wrong for [redacted]"),
            "{text}"
        );
    }
}
