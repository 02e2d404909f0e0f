//! Prometheus metrics, all labelled `credential`, updated only from [`crate::events`] so the
//! numbers always agree with the log, and rendered in the text format for `GET /metrics`.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabel {
    pub credential: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub credential: String,
    /// One of [`RESULTS`].
    pub result: &'static str,
}

/// Shared-state counters are per process, not per credential: 10 000 credentials must not
/// cost 10 000 more series each.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HaLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub expiry: Family<CredentialLabel, FloatGauge>,
    pub next_refresh: Family<CredentialLabel, FloatGauge>,
    pub last_success: Family<CredentialLabel, FloatGauge>,
    pub refresh_total: Family<ResultLabel, Counter>,
    pub duration: Family<CredentialLabel, Histogram, fn() -> Histogram>,
    pub output_errors: Family<CredentialLabel, Counter>,
    /// 1 while the credential cannot renew without a person (SPEC "Health of a credential").
    pub needs_person: Family<CredentialLabel, Gauge>,
    /// 1 while this process leads its `ha` group.
    pub ha_leader: Gauge,
    pub ha_claims: Family<HaLabel, Counter>,
    pub ha_commits: Family<HaLabel, Counter>,
    pub ha_store_errors: Counter,
    pub ha_chain_gen: Family<CredentialLabel, Gauge>,
}

fn duration_histogram() -> Histogram {
    // 5 ms .. ~41 s: a loopback emulator answers in milliseconds, a slow provider in seconds.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            expiry: Family::default(),
            next_refresh: Family::default(),
            last_success: Family::default(),
            refresh_total: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            output_errors: Family::default(),
            needs_person: Family::default(),
            ha_leader: Gauge::default(),
            ha_claims: Family::default(),
            ha_commits: Family::default(),
            ha_store_errors: Counter::default(),
            ha_chain_gen: Family::default(),
        };
        registry.register(
            "tokend_ha_leader",
            "1 while this process leads its ha group (and may call providers), else 0",
            m.ha_leader.clone(),
        );
        registry.register(
            "tokend_ha_claims",
            "Claims on a provider call in the shared store: won, lost (another process wrote first), busy (another holds it), takeover",
            m.ha_claims.clone(),
        );
        registry.register(
            "tokend_ha_commits",
            "Commits of a provider's answer to the shared store: ok, discarded (a newer commit won), adopted (another process's commit mirrored here)",
            m.ha_commits.clone(),
        );
        registry.register(
            "tokend_ha_store_errors",
            "Failed reads and writes of the shared store",
            m.ha_store_errors.clone(),
        );
        registry.register(
            "tokend_ha_chain_generation",
            "The committed generation of the credential's refresh chain in the shared store",
            m.ha_chain_gen.clone(),
        );
        registry.register(
            "tokend_token_expiry_timestamp_seconds",
            "When the current token expires, as a Unix timestamp",
            m.expiry.clone(),
        );
        registry.register(
            "tokend_next_refresh_timestamp_seconds",
            "When the next refresh attempt is planned, as a Unix timestamp",
            m.next_refresh.clone(),
        );
        registry.register(
            "tokend_last_success_timestamp_seconds",
            "When a token was last fetched successfully, as a Unix timestamp",
            m.last_success.clone(),
        );
        // The client library appends `_total` to counters.
        registry.register(
            "tokend_refresh",
            "Refresh attempts by result: success, transient_error, permanent_error, output_error, state_error, panic",
            m.refresh_total.clone(),
        );
        registry.register(
            "tokend_credential_needs_person",
            "1 while the credential cannot renew without a person (rejected credentials or refresh token, bad configuration), even if its token is still valid",
            m.needs_person.clone(),
        );
        registry.register(
            "tokend_refresh_duration_seconds",
            "Time from request to validated answer for successful refreshes",
            m.duration.clone(),
        );
        registry.register(
            "tokend_output_write_errors",
            "Failed writes of an output file or directory",
            m.output_errors.clone(),
        );
        let build: Family<BuildLabel, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("tokend_build_info", "The running tokend version", build);
        Metrics { registry, ..m }
    }

    /// Drops every series of a credential that is no longer configured.
    pub fn forget(&self, credential: &str) {
        let label = label(credential);
        self.expiry.remove(&label);
        self.next_refresh.remove(&label);
        self.last_success.remove(&label);
        self.duration.remove(&label);
        self.output_errors.remove(&label);
        self.needs_person.remove(&label);
        self.ha_chain_gen.remove(&label);
        for result in RESULTS {
            self.refresh_total.remove(&ResultLabel {
                credential: credential.to_owned(),
                result,
            });
        }
    }

    /// The Prometheus text format (0.0.4), which every scraper and `promtool` reads.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        openmetrics_to_prometheus(&out)
    }
}

/// The client library writes OpenMetrics, where a counter's metadata names it without the
/// `_total` its samples carry and the text ends with `# EOF`. The Prometheus text format
/// wants the metadata on the sample name; this rewrites the one into the other.
fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .filter(|name| !name.ends_with("_total"))
        .collect();
    let mut out = String::with_capacity(text.len() + counters.len() * 16);
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Every value of `tokend_refresh_total`'s `result`, a small fixed set so dashboards and
/// alerts can name them: the provider's answer (`success`; `transient_error`: unreachable,
/// 5xx, 429, an unusable answer — retried quickly; `permanent_error`: credentials or refresh
/// token rejected, bad configuration — a person must act), or where the local half failed
/// (`output_error`: writing an output; `state_error`: saving the state file), or a bug
/// (`panic`: the refresh task panicked; the credential is retried with backoff).
pub const RESULTS: [&str; 6] = [
    "success",
    "transient_error",
    "permanent_error",
    "output_error",
    "state_error",
    "panic",
];

pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

pub fn label(credential: &str) -> CredentialLabel {
    CredentialLabel {
        credential: credential.to_owned(),
    }
}

pub fn result_label(credential: &str, result: &'static str) -> ResultLabel {
    ResultLabel {
        credential: credential.to_owned(),
        result,
    }
}

pub fn timestamp(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_contract_names() {
        let m = Metrics::new();
        m.expiry.get_or_create(&label("a")).set(1.5e9);
        m.refresh_total
            .get_or_create(&result_label("a", "success"))
            .inc();
        m.duration.get_or_create(&label("a")).observe(0.01);
        let text = m.render();
        for name in [
            "tokend_token_expiry_timestamp_seconds{credential=\"a\"} 1500000000",
            "tokend_refresh_total{credential=\"a\",result=\"success\"} 1",
            "tokend_refresh_duration_seconds_bucket{",
            "tokend_build_info{version=",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
        assert!(
            text.contains("# TYPE tokend_refresh_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# HELP tokend_refresh_total "), "{text}");
        assert!(!text.contains("# EOF"));
        m.needs_person.get_or_create(&label("a")).set(1);
        assert!(
            m.render()
                .contains("tokend_credential_needs_person{credential=\"a\"} 1")
        );
        m.forget("a");
        assert!(!m.render().contains("credential=\"a\""));
    }
}
