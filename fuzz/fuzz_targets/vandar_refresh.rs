//! `vandar::parse_refresh` on arbitrary answers, with and without a login fallback.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokend::provider::{FetchError, vandar::parse_refresh};

fuzz_target!(|data: &[u8]| {
    for login_configured in [false, true] {
        tokend_fuzz::run_parser(data, |a| {
            let result = parse_refresh(a, login_configured);
            if let Err(FetchError::RefreshRejected {
                login_configured: l,
                ..
            }) = &result
            {
                assert_eq!(*l, login_configured);
            }
            result
        });
    }
});
