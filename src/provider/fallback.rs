//! "The refresh token was rejected, log in instead", once for every provider that keeps a
//! refresh chain beside a login (Vandar with mobile + password, OAuth2's password grant,
//! `http_json`). Which answer is the provider's definitive verdict on a refresh token stays
//! with each provider's parser, which says so with [`FetchError::RefreshRejected`]; this is
//! only the sequencing and what the dead chain is recorded as.

use std::future::Future;

use super::{Failure, FetchError, Fetched, RefreshUpdate};

/// Awaits `refresh`; when it ends in the provider's verdict that the refresh token is dead
/// and a `login` is configured, logs in instead. The login's answer then records why the
/// chain ended: `Restarted` when the login starts a new chain, `Rejected` when it does not.
/// Every other outcome (success, a transient error, a rejection without a login) is handed
/// back as it is, so a token the provider never judged is kept.
pub async fn refresh_or_login<Login, LoginFuture>(
    refresh: impl Future<Output = Result<Fetched, Failure>>,
    login: Option<Login>,
) -> Result<Fetched, Failure>
where
    Login: FnOnce() -> LoginFuture,
    LoginFuture: Future<Output = Result<Fetched, Failure>>,
{
    match (refresh.await, login) {
        (
            Err(Failure {
                error:
                    FetchError::RefreshRejected {
                        status, message, ..
                    },
                ..
            }),
            Some(login),
        ) => {
            let mut fetched = login().await?;
            let message = format!("HTTP {status}: {message}");
            fetched.refresh = match fetched.refresh {
                RefreshUpdate::Rotated(next) => RefreshUpdate::Restarted { next, message },
                _ => RefreshUpdate::Rejected { message },
            };
            Ok(fetched)
        }
        (outcome, _) => outcome,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::future::{Ready, ready};

    use super::*;
    use crate::secret::Secret;

    fn fetched(flow: &'static str, refresh: RefreshUpdate) -> Fetched {
        Fetched {
            token: Secret::new("access"),
            token_type: "Bearer".into(),
            expires_in: None,
            refresh,
            flow,
        }
    }

    fn rejected(login_configured: bool) -> Failure {
        Failure {
            error: FetchError::RefreshRejected {
                status: 401,
                message: "unauthorized".into(),
                login_configured,
            },
            rotated: None,
        }
    }

    type Outcome = Result<Fetched, Failure>;

    /// Runs the sequencing with a refresh outcome and an optional login outcome; answers
    /// what came back and whether the login was asked.
    fn run(refresh: Outcome, login: Option<Outcome>) -> (Outcome, bool) {
        let asked = Cell::new(false);
        let login = login.map(|outcome| {
            let asked = &asked;
            move || -> Ready<Outcome> {
                asked.set(true);
                ready(outcome)
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let outcome = rt.block_on(refresh_or_login(ready(refresh), login));
        (outcome, asked.get())
    }

    #[test]
    fn a_rejected_chain_logs_in_and_records_why() {
        let why = || "HTTP 401: unauthorized".to_owned();
        let cases = [
            (
                RefreshUpdate::Rotated(Secret::new("next")),
                RefreshUpdate::Restarted {
                    next: Secret::new("next"),
                    message: why(),
                },
            ),
            (
                RefreshUpdate::Unchanged,
                RefreshUpdate::Rejected { message: why() },
            ),
            (
                RefreshUpdate::Rejected {
                    message: "the login's own".into(),
                },
                RefreshUpdate::Rejected { message: why() },
            ),
        ];
        for (from_login, recorded) in cases {
            let (outcome, asked) = run(Err(rejected(true)), Some(Ok(fetched("login", from_login))));
            let f = outcome.map_err(|f| f.error).expect("the login's token");
            assert!(asked);
            assert_eq!(f.flow, "login");
            assert_eq!(f.refresh, recorded);
        }
    }

    #[test]
    fn anything_but_a_verdict_on_the_refresh_token_is_handed_back_without_a_login() {
        let transient = FetchError::Unavailable {
            url: "http://x".into(),
            status: 503,
            message: String::new(),
            retry_after: None,
        };
        let wrong_credentials = FetchError::Rejected {
            status: 403,
            message: "no".into(),
        };
        for error in [transient, wrong_credentials] {
            let text = error.to_string();
            let (outcome, asked) = run(
                Err(Failure {
                    error,
                    rotated: Some(Secret::new("salvaged")),
                }),
                Some(Ok(fetched("login", RefreshUpdate::Unchanged))),
            );
            let failure = outcome.expect_err("the refresh's error");
            assert!(!asked, "{text}");
            assert_eq!(failure.error.to_string(), text);
            assert_eq!(failure.rotated, Some(Secret::new("salvaged")));
        }
        let (outcome, asked) = run(
            Ok(fetched("refresh", RefreshUpdate::Unchanged)),
            Some(Ok(fetched("login", RefreshUpdate::Unchanged))),
        );
        assert!(!asked);
        assert_eq!(outcome.map_err(|f| f.error).unwrap().flow, "refresh");
    }

    #[test]
    fn without_a_login_the_rejection_is_the_answer() {
        let (outcome, asked) = run(Err(rejected(false)), None);
        assert!(!asked);
        let text = outcome.expect_err("the rejection").error.to_string();
        assert!(text.contains("dashboard"), "{text}");
    }

    #[test]
    fn a_failed_login_is_the_answer() {
        let (outcome, asked) = run(
            Err(rejected(true)),
            Some(Err(FetchError::Rejected {
                status: 422,
                message: "wrong password".into(),
            }
            .into())),
        );
        assert!(asked);
        let text = outcome.expect_err("the login's error").error.to_string();
        assert!(text.contains("wrong password"), "{text}");
    }
}
