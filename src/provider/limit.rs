//! A per-host request limiter, so that many credentials of one provider starting at once do
//! not trip the provider's rate limit (Vandar: 30 POSTs per 3 s, then 429).
//!
//! The rule is a sliding window: at most `limit` sends in any `window`, plus a pause set
//! from a 429's `Retry-After` that holds every send to that host. [`Window`] is pure (time is
//! passed in) and table-tested; [`Limiter`] keeps one window per host and sleeps.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The sends of one host in the last `window`, and a pause a 429 asked for.
#[derive(Debug)]
pub struct Window {
    limit: usize,
    window: Duration,
    sent: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

impl Window {
    pub fn new(limit: usize, window: Duration) -> Window {
        Window {
            limit: limit.max(1),
            window,
            sent: VecDeque::new(),
            paused_until: None,
        }
    }

    /// Records a send at `now` and returns `Ok`, or how long to wait before asking again.
    pub fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(until) = self.paused_until {
            if now < until {
                return Err(until - now);
            }
            self.paused_until = None;
        }
        while self
            .sent
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= self.window)
        {
            self.sent.pop_front();
        }
        if self.sent.len() >= self.limit {
            let oldest = *self.sent.front().expect("limit is at least 1");
            return Err((oldest + self.window).saturating_duration_since(now));
        }
        self.sent.push_back(now);
        Ok(())
    }

    /// Holds every send until `until` (a 429's `Retry-After`); never shortens a pause.
    pub fn pause(&mut self, until: Instant) {
        if self.paused_until.is_none_or(|p| p < until) {
            self.paused_until = Some(until);
        }
    }
}

/// One [`Window`] per host, shared by every credential in the process.
pub struct Limiter {
    limit: usize,
    window: Duration,
    hosts: Mutex<HashMap<String, Window>>,
}

impl Limiter {
    pub fn new(limit: usize, window: Duration) -> Limiter {
        Limiter {
            limit,
            window,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, host: &str, f: impl FnOnce(&mut Window) -> T) -> T {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let w = hosts
            .entry(host.to_owned())
            .or_insert_with(|| Window::new(self.limit, self.window));
        f(w)
    }

    /// Waits until a send to `host` is admitted.
    pub async fn acquire(&self, host: &str) {
        loop {
            match self.with(host, |w| w.admit(Instant::now())) {
                Ok(()) => return,
                // A little slack so that waiters do not all wake at the same instant.
                Err(wait) => {
                    tokio::time::sleep(wait + Duration::from_millis(fastrand::u64(1..20))).await
                }
            }
        }
    }

    /// A 429 with `Retry-After`: no send to `host` before it has passed.
    pub fn pause(&self, host: &str, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        self.with(host, |w| w.pause(until));
    }
}

/// Vandar allows 30 POSTs per 3 s per client (Laravel's throttle: a fixed window that starts
/// with the first request it counts). tokend sends at most 24 in any 3.5 s: 20 % below the
/// count, and half a second of slack so that a fixed window, which starts when the server
/// sees a request rather than when tokend sent it, never holds two of tokend's windows.
pub fn vandar() -> &'static Limiter {
    static VANDAR: OnceLock<Limiter> = OnceLock::new();
    VANDAR.get_or_init(|| Limiter::new(VANDAR_POSTS, VANDAR_WINDOW))
}

pub const VANDAR_POSTS: usize = 24;
pub const VANDAR_WINDOW: Duration = Duration::from_millis(3500);

/// `scheme://host:port` of a URL, the key a limit applies to.
pub fn host_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!("{scheme}://{}", authority.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_is_cut_at_the_limit_and_resumes_as_the_window_slides() {
        let t0 = Instant::now();
        let mut w = Window::new(3, 3 * S);
        // (offset from t0, expected answer)
        let steps: &[(Duration, Result<(), Duration>)] = &[
            (Duration::ZERO, Ok(())),
            (Duration::ZERO, Ok(())),
            (S, Ok(())),
            (S, Err(2 * S)),
            (2 * S, Err(S)),
            (3 * S, Ok(())),
            (3 * S, Ok(())),
            (3 * S, Err(S)),
            (4 * S, Ok(())),
            (4 * S + 500 * MS, Err(1500 * MS)),
        ];
        for (i, (at, want)) in steps.iter().enumerate() {
            assert_eq!(w.admit(t0 + *at), *want, "step {i} at {at:?}");
        }
    }

    #[test]
    fn never_more_than_the_limit_in_any_window() {
        let t0 = Instant::now();
        let mut w = Window::new(24, 3 * S);
        let mut sent = Vec::new();
        // 100 callers asking every 10 ms for up to 20 s of simulated time.
        let mut now = t0;
        let mut waiting = 100;
        while waiting > 0 && now < t0 + 20 * S {
            while waiting > 0 && w.admit(now).is_ok() {
                sent.push(now);
                waiting -= 1;
            }
            now += 10 * MS;
        }
        assert_eq!(waiting, 0);
        for (i, &t) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|&&u| u < t + 3 * S).count();
            assert!(in_window <= 24, "{in_window} sends within 3 s of send {i}");
        }
    }

    #[test]
    fn a_pause_holds_everything_and_is_never_shortened() {
        let t0 = Instant::now();
        let mut w = Window::new(10, 3 * S);
        w.pause(t0 + 5 * S);
        w.pause(t0 + 2 * S);
        assert_eq!(w.admit(t0), Err(5 * S));
        assert_eq!(w.admit(t0 + 4 * S), Err(S));
        assert_eq!(w.admit(t0 + 5 * S), Ok(()));
    }

    #[test]
    fn hosts_are_scheme_host_and_port() {
        for (url, host) in [
            (
                "https://api.vandar.io/v3/refreshtoken",
                "https://api.vandar.io",
            ),
            (
                "http://127.0.0.1:8080/v2/login?x=1",
                "http://127.0.0.1:8080",
            ),
            ("https://API.Vandar.io", "https://api.vandar.io"),
        ] {
            assert_eq!(host_of(url), host);
        }
    }
}
