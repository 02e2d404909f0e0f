//! Every observable event of a credential's life, each in one function that writes the log
//! line and updates the metrics together, so logs and metrics can never disagree.
//!
//! Fields first, then a short sentence. ERROR means an operator must act.

use std::time::{Duration, SystemTime};

use crate::metrics::{self, label, result_label, timestamp};
use crate::token::{LifetimeSource, Token};
use crate::util::{human_duration, rfc3339};

pub fn token_refreshed(
    credential: &str,
    token: &Token,
    flow: &str,
    source: LifetimeSource,
    took: Duration,
) {
    tracing::info!(
        credential,
        event = "refreshed",
        flow,
        fingerprint = %token.value.fingerprint(),
        expires_at = %rfc3339(token.expires_at),
        lifetime = %human_duration(token.lifetime()),
        lifetime_from = ?source,
        took_ms = took.as_millis() as u64,
        "token refreshed"
    );
    let m = metrics::get();
    m.expiry
        .get_or_create(&label(credential))
        .set(timestamp(token.expires_at));
    m.last_success
        .get_or_create(&label(credential))
        .set(timestamp(SystemTime::now()));
    m.duration
        .get_or_create(&label(credential))
        .observe(took.as_secs_f64());
}

/// An attempt that fetched a token and wrote every output (one whose outputs then failed
/// counts as `output_error` instead: one result per attempt).
pub fn refresh_succeeded(credential: &str) {
    metrics::get()
        .refresh_total
        .get_or_create(&result_label(credential, "success"))
        .inc();
}

pub fn token_reused(
    credential: &str,
    token: &Token,
    next: SystemTime,
    last_success: Option<SystemTime>,
) {
    let m = metrics::get();
    m.expiry
        .get_or_create(&label(credential))
        .set(timestamp(token.expires_at));
    if let Some(at) = last_success {
        m.last_success
            .get_or_create(&label(credential))
            .set(timestamp(at));
    }
    tracing::info!(
        credential,
        event = "reused",
        fingerprint = %token.value.fingerprint(),
        expires_at = %rfc3339(token.expires_at),
        next_refresh = %rfc3339(next),
        "token from state is still fresh; reused without calling the provider"
    );
}

/// The periodic check found an output deleted or replaced.
pub fn output_not_in_place(credential: &str, problem: &str) {
    tracing::warn!(
        credential,
        event = "output_missing",
        problem,
        "output not in place"
    );
}

/// Outputs that no longer held the token were written again from state.
pub fn outputs_restored(credential: &str) {
    tracing::info!(
        credential,
        event = "restored",
        "outputs restored from state (no provider call)"
    );
}

pub fn outputs_written(credential: &str, paths: &[String]) {
    tracing::debug!(credential, event = "written", outputs = %paths.join(", "), "outputs written");
}

/// A credential is scheduled for the first time: every `result` series exists from the
/// start at 0, so a rate or an alert over failures works before the first failure.
pub fn tracked(credential: &str) {
    let m = metrics::get();
    for result in metrics::RESULTS {
        drop(
            m.refresh_total
                .get_or_create(&result_label(credential, result)),
        );
    }
}

/// Whether the credential can renew without a person (SPEC "Health of a credential").
pub fn health(credential: &str, needs_person: bool) {
    metrics::get()
        .needs_person
        .get_or_create(&label(credential))
        .set(i64::from(needs_person));
}

/// A failed attempt; `result` is its `tokend_refresh_total` label (see [`metrics::RESULTS`]).
pub fn refresh_failed(
    credential: &str,
    error: &str,
    result: &'static str,
    transient: bool,
    failures: u32,
    retry_in: Duration,
    token_left: Option<Duration>,
) {
    metrics::get()
        .refresh_total
        .get_or_create(&result_label(credential, result))
        .inc();
    let retry_in = human_duration(retry_in);
    let left = token_left
        .map(human_duration)
        .unwrap_or_else(|| "none".into());
    if transient {
        tracing::warn!(credential, event = "failed", error, failures, retry_in = %retry_in, token_left = %left, "refresh failed; retrying");
    } else {
        tracing::error!(credential, event = "failed", error, failures, retry_in = %retry_in, token_left = %left, "refresh failed and needs attention; retrying slowly");
    }
}

/// A refresh task panicked; counted as `result="panic"` and logged at ERROR (a bug, never
/// an operator's mistake), with the backoff it waits before the next attempt.
pub fn refresh_panicked(credential: &str, error: &str, failures: u32, retry_in: Duration) {
    metrics::get()
        .refresh_total
        .get_or_create(&result_label(credential, "panic"))
        .inc();
    let retry_in = human_duration(retry_in);
    tracing::error!(credential, event = "panicked", error, failures, retry_in = %retry_in, "refresh task panicked; retrying");
}

pub fn chain_rejected(credential: &str, message: &str) {
    tracing::warn!(
        credential,
        event = "chain_rejected",
        error = message,
        "refresh token was rejected; logged in instead and will keep logging in until a new refresh token is configured"
    );
}

pub fn chain_restarted(credential: &str, message: &str, fingerprint: &str) {
    tracing::warn!(
        credential,
        event = "chain_restarted",
        error = message,
        refresh_fingerprint = fingerprint,
        "refresh token was rejected; logged in instead, which started a new refresh chain"
    );
}

pub fn chain_rotated(credential: &str, fingerprint: &str) {
    tracing::debug!(
        credential,
        event = "rotated",
        refresh_fingerprint = fingerprint,
        "new refresh token saved"
    );
}

pub fn seed_spent(credential: &str, other: &str, state_file: &std::path::Path) {
    tracing::warn!(
        credential,
        event = "seed_spent",
        "the configured refresh token was already used by credential `{other}` (state file `{}`) \
         and a refresh token works only once, so it is not sent again; logging in instead if a \
         login is configured. If `{other}` was renamed to `{credential}`, stop tokend and \
         rename that file to `{credential}.json`; otherwise put a new refresh token in the config",
        state_file.display()
    );
}

pub fn state_discarded(credential: &str, reason: &str) {
    tracing::warn!(
        credential,
        event = "state_discarded",
        reason,
        "state not used"
    );
}

pub fn lifetime_warning(credential: &str, warning: &str) {
    tracing::warn!(credential, event = "schedule", "{warning}");
}

pub fn hook_failed(credential: &str, hook: &str, error: &str) {
    tracing::warn!(
        credential,
        event = "hook_failed",
        hook,
        error,
        "on_refresh hook failed"
    );
}

pub fn hook_ran(credential: &str, hook: &str) {
    tracing::debug!(credential, event = "hook", hook, "on_refresh hook ran");
}

pub fn output_failed(credential: &str) {
    metrics::get()
        .output_errors
        .get_or_create(&label(credential))
        .inc();
}

/// The supervisor planned the next attempt.
pub fn scheduled(credential: &str, next: SystemTime) {
    metrics::get()
        .next_refresh
        .get_or_create(&label(credential))
        .set(timestamp(next));
}

/// A credential left the configuration.
pub fn removed(credential: &str) {
    tracing::info!(
        credential,
        event = "removed",
        "credential removed from the configuration"
    );
    metrics::get().forget(credential);
}

// ------------------------------------------------------------ shared state (ha)

fn ha(
    family: &prometheus_client::metrics::family::Family<
        metrics::HaLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    result: &'static str,
) {
    family.get_or_create(&metrics::HaLabel { result }).inc();
}

/// A shared-store read or write failed (the error itself is logged by the attempt).
pub fn store_failed() {
    metrics::get().ha_store_errors.inc();
}

/// Another process committed a newer token; this one mirrors it into its outputs.
pub fn adopted(credential: &str, token_gen: u64, chain_gen: u64) {
    tracing::info!(
        credential,
        event = "adopted",
        token_gen,
        chain_gen,
        "another process of the group committed a new token; mirroring it"
    );
    ha(&metrics::get().ha_commits, "adopted");
    chain_generation(credential, chain_gen);
}

pub fn chain_generation(credential: &str, chain_gen: u64) {
    metrics::get()
        .ha_chain_gen
        .get_or_create(&label(credential))
        .set(chain_gen as i64);
}

pub fn claim_busy(credential: &str, holder: &str) {
    tracing::info!(
        credential,
        event = "claim_busy",
        holder,
        "another process of the group is refreshing this credential; waiting for its commit"
    );
    ha(&metrics::get().ha_claims, "busy");
}

pub fn claim_won(credential: &str, chain_gen: u64) {
    tracing::debug!(
        credential,
        event = "claimed",
        chain_gen,
        "claimed the next provider call"
    );
    ha(&metrics::get().ha_claims, "won");
}

pub fn claim_lost(credential: &str) {
    tracing::debug!(
        credential,
        event = "claim_lost",
        "another process wrote the record first; reading it again (no provider call)"
    );
    ha(&metrics::get().ha_claims, "lost");
}

pub fn claim_taken_over(credential: &str, holder: &str, silent: Duration) {
    tracing::warn!(credential, event = "claim_taken_over", holder, silent = %human_duration(silent), "took over a claim that was silent too long; its holder may have died mid-refresh");
    ha(&metrics::get().ha_claims, "takeover");
}

pub fn committed(credential: &str, chain_gen: u64, token_gen: u64, new_token: bool) {
    tracing::debug!(
        credential,
        event = "committed",
        chain_gen,
        token_gen,
        new_token,
        "committed to the shared store"
    );
    ha(&metrics::get().ha_commits, "ok");
    chain_generation(credential, chain_gen);
}

/// The provider gave this process a successor of a refresh token another process had
/// already renewed: only a provider with a reuse grace window does that.
pub fn successor_discarded(credential: &str, committed_gen: u64) {
    tracing::error!(
        credential,
        event = "successor_discarded",
        committed_gen,
        "another process committed this chain first: the provider accepted the same refresh token twice (a reuse grace window?); this process's answer is dropped and never published"
    );
    ha(&metrics::get().ha_commits, "discarded");
}

pub fn leadership(group: &str, leading: bool, leader: Option<&str>) {
    metrics::get().ha_leader.set(i64::from(leading));
    if leading {
        tracing::info!(
            group,
            event = "leading",
            "this process leads its group and refreshes its credentials"
        );
    } else {
        tracing::info!(
            group,
            event = "following",
            leader = leader.unwrap_or("none"),
            "this process follows; it mirrors the shared state and calls no provider"
        );
    }
}

/// A `kubernetes_secret` output now holds the token (`token_gen` in its annotation).
pub fn secret_written(credential: &str, secret: &str, token_gen: u64) {
    tracing::debug!(
        credential,
        event = "written",
        secret,
        token_gen,
        "Kubernetes Secret written"
    );
}
