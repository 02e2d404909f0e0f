//! `config::parse` on arbitrary text (invalid UTF-8 replaced, as a lossy read would): never
//! panics; errors are fine but must say something.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tokend::config::{ConfigError, Secrets, parse};
use tokend::provider::Provider;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/fuzz/config.yaml");
    match parse(&text, path, &tokend_fuzz::NoEnv, Secrets::Skip) {
        Ok(config) => {
            let _ = format!("{config:?}");
            for c in &config.credentials {
                let _ = c.provider.plan();
                for o in &c.outputs {
                    let _ = o.describe();
                }
            }
        }
        Err(e) => {
            assert!(matches!(e, ConfigError::Invalid { .. }));
            assert!(!e.errors().is_empty(), "an invalid config without a reason");
            assert!(e.errors().iter().all(|m| !m.is_empty()), "an empty reason");
            let _ = e.to_string();
        }
    }
});
