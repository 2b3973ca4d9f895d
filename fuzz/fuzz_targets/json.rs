//! The strict (canonical) JSON parser of federation bodies: `knockd::matrix::json`.
//!
//! Beyond "no panic": `parse_object` agrees with `parse_value`, and whatever is accepted
//! re-parses from its canonical form to the same value (what we hash and sign is what was sent).
#![no_main]

use knockd::matrix::json;
use libfuzzer_sys::fuzz_target;
use ruma::CanonicalJsonValue;

fuzz_target!(|data: &[u8]| {
    let value = json::parse_value(data);
    let object = json::parse_object(data);
    match (&value, &object) {
        (Ok(CanonicalJsonValue::Object(v)), Ok(o)) => assert_eq!(v, o),
        (Ok(CanonicalJsonValue::Object(_)), Err(e)) => panic!("object refused by parse_object: {e}"),
        (Ok(_), Ok(_)) => panic!("parse_object accepted a non-object"),
        (Ok(_), Err(_)) => {}
        (Err(a), Err(b)) => assert_eq!(a, b),
        (Err(e), Ok(_)) => panic!("parse_object accepted what parse_value refused: {e}"),
    }
    if let Ok(v) = value {
        let canonical = v.to_string();
        let again = json::parse_value(canonical.as_bytes())
            .unwrap_or_else(|e| panic!("canonical form {canonical:?} refused: {e}"));
        assert_eq!(again, v, "canonical form re-parses to another value");
    }
});
