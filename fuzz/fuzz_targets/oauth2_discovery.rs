//! `oauth2::parse_discovery` on arbitrary answers: never panics; a success is an http(s) URL
//! taken from a 2xx answer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(answer) = tokend_fuzz::answer(data) else {
        return;
    };
    match tokend::provider::oauth2::parse_discovery(&answer) {
        Ok(url) => {
            assert!(
                answer.is_success(),
                "discovery accepted HTTP {}",
                answer.status
            );
            assert!(
                url.starts_with("https://") || url.starts_with("http://"),
                "discovery accepted {url:?}"
            );
        }
        Err(e) => tokend_fuzz::check_error(&e),
    }
});
