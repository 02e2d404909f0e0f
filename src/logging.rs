//! Log setup: human text or one JSON object per line on stderr, level from the config
//! unless `RUST_LOG` says otherwise. Nothing logged anywhere carries a secret.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat, level: &str) {
    // Only ASCII reaches the parser: tracing-subscriber 0.3 panics slicing a directive at a
    // non-ASCII character, and a typo in RUST_LOG must not stop the daemon.
    let parse = |text: &str| {
        text.is_ascii()
            .then(|| EnvFilter::try_new(text).ok())
            .flatten()
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| parse(&v))
        .or_else(|| parse(level))
        .unwrap_or_else(|| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colours only for people: journald, `kubectl logs` and files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // try_init: tests and `demo` may initialise twice; the first setup wins.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
