//! When to refresh and when to retry: pure functions of times, policies and a random draw,
//! so every rule is tested as arithmetic and the daemon only has to sleep until the answer.

use std::time::{Duration, SystemTime};

use crate::units::Share;

#[derive(Clone, Debug, PartialEq)]
pub struct RefreshPolicy {
    /// Refresh when this share of the lifetime has passed.
    pub at: Share,
    /// Or at this fixed interval after issue, when shorter than the lifetime.
    pub every: Option<Duration>,
    /// Up to this share of the lifetime earlier, drawn at random, so that many credentials
    /// (or many replicas) do not hit a provider at the same instant.
    pub jitter: Share,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            at: Share(0.8),
            every: None,
            jitter: Share(0.05),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Between attempts after a permanent error, so an account is never locked out.
    pub permanent: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            permanent: Duration::from_secs(1800),
        }
    }
}

/// How long before expiry a refresh must happen at the latest: a tenth of the lifetime,
/// at most five minutes. A 4 s token is replaced 0.4 s before it dies whatever `at` says.
pub fn safety_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(300))
}

/// No token is replaced sooner than this after it was issued, whatever its lifetime says.
/// A provider answering `expires_in: 0.01`, a JWT `exp` a second away or a skewed clock would
/// otherwise make a loop of requests (tens a second, enough to be blocked or to lock an
/// account); one request a second keeps such a credential working as well as it can.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The interval after issue at which `policy` refreshes a token of `lifetime`, and a warning
/// when `every` had to be clamped because it is not shorter than the lifetime, or when the
/// interval had to be raised to [`MIN_INTERVAL`].
pub fn interval(lifetime: Duration, policy: &RefreshPolicy) -> (Duration, Option<String>) {
    let by_share = policy.at.of(lifetime);
    let (after, warning) = match policy.every {
        Some(every) if every < lifetime => (every, None),
        Some(every) => (
            by_share,
            Some(format!(
                "`refresh.every` ({}) is not shorter than the token lifetime ({}); refreshing at {} of the lifetime instead",
                humantime::format_duration(every),
                humantime::format_duration(lifetime),
                policy.at
            )),
        ),
        None => (by_share, None),
    };
    if after < MIN_INTERVAL {
        return (
            MIN_INTERVAL,
            Some(format!(
                "the token lives only {} (its refresh would be due after {}); refreshing no more \
                 often than every {} instead, so the token is expired part of the time",
                crate::util::human_duration(lifetime),
                crate::util::human_duration(after),
                crate::util::human_duration(MIN_INTERVAL)
            )),
        );
    }
    (after, warning)
}

/// The moment to refresh a token issued at `issued` that expires at `expires`. `draw` is a
/// uniform random number in [0, 1): jitter only ever moves the refresh earlier, and nothing
/// moves it sooner than [`MIN_INTERVAL`] after issue.
pub fn refresh_at(
    issued: SystemTime,
    expires: SystemTime,
    policy: &RefreshPolicy,
    draw: f64,
) -> SystemTime {
    let lifetime = expires.duration_since(issued).unwrap_or_default();
    let (after, _) = interval(lifetime, policy);
    let latest = lifetime.saturating_sub(safety_margin(lifetime));
    let jitter = policy.jitter.of(lifetime).mul_f64(draw.clamp(0.0, 1.0));
    issued + after.min(latest).saturating_sub(jitter).max(MIN_INTERVAL)
}

/// Delay before the next attempt after `failures` consecutive failures (1 for the first).
///
/// Transient errors: capped exponential backoff with full jitter over [initial, cap], and
/// never sooner than the provider's `Retry-After`. Permanent errors: the slow `permanent`
/// delay plus up to 10 % jitter, so retries never come more often than that.
pub fn retry_delay(
    failures: u32,
    transient: bool,
    retry_after: Option<Duration>,
    policy: &RetryPolicy,
    draw: f64,
) -> Duration {
    let draw = draw.clamp(0.0, 1.0);
    let delay = if transient {
        let exp = failures.saturating_sub(1).min(32);
        let cap = policy
            .initial
            .saturating_mul(1u32 << exp.min(31))
            .min(policy.max)
            .max(policy.initial);
        policy
            .initial
            .saturating_add((cap - policy.initial).mul_f64(draw))
    } else {
        policy
            .permanent
            .saturating_add((policy.permanent / 10).mul_f64(draw))
    };
    delay.max(retry_after.unwrap_or_default())
}

/// How much of a provider's `Retry-After` is honoured.
///
/// All of it, except that the wait never runs past the point where the current token would
/// expire without one more attempt: `token_left` is the time until it expires, `attempt`
/// how long one attempt may take (the request timeout). A provider that says "come back in
/// a day" about a token with an hour left is asked again before that hour is over. With no
/// valid token there is nothing to protect, but a bogus header still cannot park the
/// credential for longer than `no_token_cap` (the pace of permanent errors).
pub fn honoured_retry_after(
    retry_after: Option<Duration>,
    token_left: Option<Duration>,
    attempt: Duration,
    no_token_cap: Duration,
) -> Option<Duration> {
    let wait = retry_after?;
    Some(match token_left {
        Some(left) => wait.min(left.saturating_sub(attempt)),
        None => wait.min(no_token_cap),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const DAY: Duration = Duration::from_secs(86_400);

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn policy(at: f64, jitter: f64, every: Option<Duration>) -> RefreshPolicy {
        RefreshPolicy {
            at: Share(at),
            every,
            jitter: Share(jitter),
        }
    }

    #[test]
    fn refresh_lands_at_the_share_before_expiry_for_all_lifetimes() {
        let p = RefreshPolicy::default();
        for lifetime in [2 * S, 4 * S, 60 * S, 3600 * S, 5 * DAY, 30 * DAY, 365 * DAY] {
            for draw in [0.0, 0.25, 0.5, 0.999] {
                let at = refresh_at(t0(), t0() + lifetime, &p, draw);
                let offset = at.duration_since(t0()).unwrap();
                let margin = safety_margin(lifetime);
                assert!(
                    offset <= lifetime - margin,
                    "{lifetime:?}: {offset:?} too late"
                );
                assert!(offset < lifetime, "{lifetime:?} refresh after expiry");
                // Jitter only ever makes it earlier, by at most jitter × lifetime.
                let nominal = p.at.of(lifetime).min(lifetime - margin);
                assert!(offset <= nominal);
                assert!(offset + p.jitter.of(lifetime) >= nominal);
            }
        }
    }

    #[test]
    fn vandar_five_days_at_80_percent_is_four_days() {
        let at = refresh_at(t0(), t0() + 5 * DAY, &policy(0.8, 0.0, None), 0.0);
        assert_eq!(at, t0() + 4 * DAY);
    }

    #[test]
    fn short_tokens_keep_a_margin_even_at_99_percent() {
        let at = refresh_at(t0(), t0() + 4 * S, &policy(0.99, 0.0, None), 0.0);
        assert_eq!(at, t0() + Duration::from_millis(3600));
        let at = refresh_at(t0(), t0() + DAY, &policy(0.999, 0.0, None), 0.0);
        assert_eq!(at, t0() + DAY - Duration::from_secs(300));
    }

    #[test]
    fn every_is_used_when_shorter_and_clamped_with_a_warning_when_not() {
        let p = policy(0.8, 0.0, Some(4 * DAY));
        assert_eq!(refresh_at(t0(), t0() + 15 * DAY, &p, 0.0), t0() + 4 * DAY);
        let (d, warning) = interval(3 * DAY, &p);
        assert_eq!(d, (3 * DAY).mul_f64(0.8));
        assert!(
            warning
                .unwrap()
                .contains("not shorter than the token lifetime")
        );
    }

    #[test]
    fn tiny_lifetimes_are_floored_at_one_second_with_a_warning() {
        let ms = Duration::from_millis;
        // (lifetime, policy, refresh after issue, warns)
        let cases = [
            (ms(10), policy(0.8, 0.05, None), S, true),
            (Duration::ZERO, policy(0.8, 0.05, None), S, true),
            (S, policy(0.8, 0.0, None), S, true),
            (ms(1250), policy(0.8, 0.0, None), S, false),
            (2 * S, policy(0.8, 0.0, None), ms(1600), false),
            (2 * S, policy(0.8, 0.5, None), ms(1600), false),
            (10 * S, policy(0.8, 0.0, Some(ms(100))), S, true),
            (10 * S, policy(0.8, 0.0, Some(2 * S)), 2 * S, false),
        ];
        for (lifetime, p, want, warns) in cases {
            for draw in [0.0, 0.999] {
                let at = refresh_at(t0(), t0() + lifetime, &p, draw);
                let after = at.duration_since(t0()).unwrap();
                assert!(after >= MIN_INTERVAL, "{lifetime:?}: {after:?}");
                if draw == 0.0 {
                    assert_eq!(after, want, "{lifetime:?} {p:?}");
                }
            }
            let (_, warning) = interval(lifetime, &p);
            assert_eq!(warning.is_some(), warns, "{lifetime:?} {p:?}: {warning:?}");
            if warns {
                assert!(
                    warning.unwrap().contains("no more often than every 1s"),
                    "{lifetime:?}"
                );
            }
        }
    }

    #[test]
    fn due_without_jitter() {
        let p = policy(0.8, 0.05, None);
        let exp = t0() + 100 * S;
        assert_eq!(refresh_at(t0(), exp, &p, 0.0), t0() + 80 * S);
    }

    #[test]
    fn transient_backoff_grows_and_caps() {
        let p = RetryPolicy {
            initial: S,
            max: 60 * S,
            permanent: 1800 * S,
        };
        assert_eq!(retry_delay(1, true, None, &p, 0.999), S);
        assert_eq!(retry_delay(2, true, None, &p, 0.0), S);
        assert!(retry_delay(3, true, None, &p, 0.999) <= 4 * S);
        assert!(retry_delay(3, true, None, &p, 0.999) > 3 * S);
        for n in 7..100 {
            let d = retry_delay(n, true, None, &p, 0.999);
            assert!(d <= 60 * S && d > 59 * S, "{n}: {d:?}");
        }
        assert_eq!(retry_delay(u32::MAX, true, None, &p, 0.0), S);
    }

    #[test]
    fn retry_after_is_honoured() {
        let p = RetryPolicy::default();
        assert_eq!(retry_delay(1, true, Some(120 * S), &p, 0.5), 120 * S);
        assert!(retry_delay(9, true, Some(2 * S), &p, 0.9) > 2 * S);
    }

    #[test]
    fn retry_after_never_outlives_the_token() {
        const H: Duration = Duration::from_secs(3600);
        let cap = 1800 * S;
        // (Retry-After, token left, one attempt) -> honoured
        let table = [
            (None, Some(H), 30 * S, None),
            (Some(120 * S), Some(H), 30 * S, Some(120 * S)),
            (Some(DAY), Some(H), 30 * S, Some(H - 30 * S)),
            (Some(999_999_999 * S), Some(4 * S), 2 * S, Some(2 * S)),
            // Less left than one attempt takes: retry as soon as the backoff allows.
            (Some(DAY), Some(S), 2 * S, Some(Duration::ZERO)),
            (Some(DAY), Some(Duration::ZERO), 2 * S, Some(Duration::ZERO)),
            // No token to protect: the provider is obeyed up to the permanent pace.
            (Some(120 * S), None, 30 * S, Some(120 * S)),
            (Some(DAY), None, 30 * S, Some(cap)),
        ];
        for (retry_after, left, attempt, want) in table {
            assert_eq!(
                honoured_retry_after(retry_after, left, attempt, cap),
                want,
                "{retry_after:?} {left:?} {attempt:?}"
            );
        }
        // The backoff still applies when the honoured wait is shorter.
        let p = RetryPolicy::default();
        let honoured = honoured_retry_after(Some(DAY), Some(S), 2 * S, cap);
        assert_eq!(retry_delay(1, true, honoured, &p, 0.0), p.initial);
    }

    #[test]
    fn absurd_policies_saturate_instead_of_panicking() {
        let p = RetryPolicy {
            initial: Duration::MAX,
            max: Duration::MAX,
            permanent: Duration::MAX,
        };
        assert_eq!(retry_delay(3, true, None, &p, 0.999), Duration::MAX);
        assert_eq!(retry_delay(1, false, None, &p, 0.999), Duration::MAX);
    }

    #[test]
    fn permanent_errors_retry_slowly() {
        let p = RetryPolicy::default();
        for n in [1, 2, 50] {
            let d = retry_delay(n, false, None, &p, 0.5);
            assert!(d >= 1800 * S && d <= 1980 * S, "{d:?}");
        }
    }
}
