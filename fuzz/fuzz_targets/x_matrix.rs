//! The `Authorization: X-Matrix …` header parser, exactly as inbound federation runs it
//! (`daemon/src/federation/auth.rs`, `origin_and_key`): `quote_params` then ruma's
//! `XMatrix::parse`. The daemon only ever sees visible-ASCII header text (`HeaderValue::to_str`);
//! any UTF-8 is fed here, a superset.
#![no_main]

use knockd::federation::auth::quote_params;
use libfuzzer_sys::fuzz_target;
use ruma::api::federation::authentication::XMatrix;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let quoted = quote_params(text);
    if let Ok(x) = XMatrix::parse(quoted.as_ref()) {
        // What the caller reads next.
        let _ = (x.origin.as_str(), x.key.as_str(), x.destination.as_ref().map(|d| d.as_str()));
    }
});
