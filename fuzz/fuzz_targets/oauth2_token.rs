//! `oauth2::parse_token_response` (also yaVapteke's parser) on arbitrary answers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tokend_fuzz::run_parser(data, |a| {
        let fetched = tokend::provider::oauth2::parse_token_response(a, "x");
        if let Ok(f) = &fetched {
            assert_eq!(f.flow, "x");
            assert!(!f.token_type.is_empty(), "an empty token_type was kept");
        }
        fetched
    });
});
