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
    /// `success`, `transient_error` or `permanent_error`.
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
        };
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
            "Refresh attempts by result",
            m.refresh_total.clone(),
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
        for result in RESULTS {
            self.refresh_total.remove(&ResultLabel {
                credential: credential.to_owned(),
                result,
            });
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

const RESULTS: [&str; 3] = ["success", "transient_error", "permanent_error"];

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
        m.forget("a");
        assert!(!m.render().contains("credential=\"a\""));
    }
}
