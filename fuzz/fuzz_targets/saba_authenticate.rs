//! `saba::parse_authenticate` on arbitrary answers: never panics; a success holds a valid token.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tokend_fuzz::run_parser(data, tokend::provider::saba::parse_authenticate);
});
