//! Inbound request authentication: `Authorization: X-Matrix …`, verified over the raw request
//! target exactly as received, with the origin's key (KNOCK-SPEC A.2).

use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, Request},
    http::{HeaderMap, Method, Uri, header},
};
use http_body_util::BodyExt;
use ruma::{OwnedServerName, api::federation::authentication::XMatrix};

use crate::{
    error::ApiError,
    matrix::{json, now_ms, remote_keys::KeyFetchError},
    service::AppState,
};

/// Body limit of the single-event endpoints (the spec's PDU size limit).
pub const MAX_PDU_BODY: usize = 65_536;

/// Body limit of `/send` (50 PDUs of at most 64 KiB and 100 EDUs).
pub const MAX_TXN_BODY: usize = 8 * 1024 * 1024;

/// An authenticated federation request: who sent it, its raw query and its body.
/// `LIMIT` caps the body; more gives 413 `M_TOO_LARGE` without reading the rest. With `STRICT`
/// the body must be canonical JSON; without it (for `/send`, whose EDUs may carry floats) any
/// JSON is taken and the signature is checked over its canonical form.
pub struct Signed<const LIMIT: usize, const STRICT: bool = true> {
    pub origin: OwnedServerName,
    pub query: Vec<(String, String)>,
    pub body: Bytes,
    /// The body as canonical JSON, when it is (parsed once, during authentication).
    parsed: Option<ruma::CanonicalJsonValue>,
}

impl<const LIMIT: usize, const STRICT: bool> Signed<LIMIT, STRICT> {
    /// Every value of a query parameter, in order (`?ver=9&ver=10`).
    pub fn query_all(&self, name: &str) -> Vec<String> {
        self.query.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }

    /// The body as a canonical-JSON object.
    pub fn json(self) -> Result<ruma::CanonicalJsonObject, ApiError> {
        match self.parsed {
            Some(ruma::CanonicalJsonValue::Object(o)) => Ok(o),
            Some(_) => Err(ApiError::bad_json("expected a JSON object")),
            None => json::parse_object(&self.body).map_err(json_error),
        }
    }
}

pub fn json_error(e: json::JsonError) -> ApiError {
    match e {
        json::JsonError::NotJson(m) => ApiError::BadRequest("M_NOT_JSON", m),
        json::JsonError::BadJson(m) => ApiError::BadRequest("M_BAD_JSON", m),
    }
}

impl<const LIMIT: usize, const STRICT: bool> FromRequest<AppState> for Signed<LIMIT, STRICT> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        // Who asks is settled before a byte of the body is read: the header's syntax, that the
        // request is for us, and the origin's key. A stranger's large or slow body costs nothing.
        let (x, keys) = origin_and_key(app, &parts.headers).await?;
        let deadline = Duration::from_millis(app.config.federation.limits.body_timeout_ms);
        let body = read_limited::<LIMIT>(&parts.headers, body, deadline).await?;
        let parsed = authenticate(app, &x, &keys, &parts.method, &parts.uri, &body, STRICT)?;
        let query = parse_query(parts.uri.query().unwrap_or_default());
        Ok(Self { origin: x.origin, query, body, parsed })
    }
}

/// The most of an over-long body read (and thrown away) so that its sender sees the 413: closing
/// the connection on a client still sending makes it see a reset instead.
const DRAIN_AT_MOST: u64 = 16 * 1024 * 1024;

async fn read_limited<const LIMIT: usize>(
    headers: &HeaderMap,
    body: Body,
    deadline: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::TooLarge(format!("request body over {LIMIT} bytes"));
    let too_slow = || {
        ApiError::RequestTimeout(format!(
            "the request body did not arrive within {} s",
            deadline.as_secs_f32()
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared.filter(|l| *l > LIMIT as u64) {
        if length <= DRAIN_AT_MOST {
            let mut body = body;
            let drain = async {
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(deadline, drain).await;
        }
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, LIMIT);
    match tokio::time::timeout(deadline, limited.collect()).await {
        Err(_) => Err(too_slow()),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(too_large())
        }
        Ok(Err(e)) => {
            Err(ApiError::BadRequest("M_BAD_JSON", format!("cannot read the request body: {e}")))
        }
    }
}

/// The X-Matrix header, checked for syntax and destination, and the origin's keys (fetched if
/// need be, only from addresses outbound federation may reach).
async fn origin_and_key(
    app: &AppState,
    headers: &HeaderMap,
) -> Result<(XMatrix, ruma::signatures::PublicKeyMap), ApiError> {
    let unauthorized = |m: String| ApiError::Unauthorized(m);
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized("missing Authorization: X-Matrix header".to_owned()));
    };
    let malformed = |e: String| {
        ApiError::BadRequest("M_UNAUTHORIZED", format!("malformed X-Matrix header: {e}"))
    };
    let text = value.to_str().map_err(|e| malformed(e.to_string()))?;
    let x = XMatrix::parse(quote_params(text).as_ref()).map_err(|e| malformed(e.to_string()))?;
    let ours = app.keys.server_name();
    if x.destination.as_ref().is_some_and(|d| d != ours) {
        return Err(unauthorized(format!("this request is for another server, not {ours}")));
    }
    let map = app.remote_keys.key_map(&x.origin, x.key.as_str(), now_ms()).await.map_err(|e| {
        if let KeyFetchError::Store(why) = &e {
            // Our failure, not the request's: the sender should try again, not give up.
            tracing::warn!(origin = %x.origin, error = %why, "key store unavailable");
            return ApiError::Unavailable("the key store is unavailable; try again".to_owned());
        }
        // The cause (a refused address, a connection error) stays in our log: the answer
        // must not make this listener a port scanner for whoever names an origin.
        tracing::info!(origin = %x.origin, key = %x.key, error = %e, "origin's key not found");
        unauthorized(format!(
            "cannot check the signature: key {} of {} could not be fetched",
            x.key, x.origin
        ))
    })?;
    Ok((x, map))
}

/// Parses the body (strictly, or as any JSON where `strict` is false) and checks the X-Matrix
/// signature over it.
fn authenticate(
    app: &AppState,
    x: &XMatrix,
    map: &ruma::signatures::PublicKeyMap,
    method: &Method,
    uri: &Uri,
    body: &Bytes,
    strict: bool,
) -> Result<Option<ruma::CanonicalJsonValue>, ApiError> {
    let unauthorized = |m: String| ApiError::Unauthorized(m);
    let ours = app.keys.server_name();
    let mut lenient = None;
    let mut parsed = None;
    if !body.is_empty() {
        match json::parse_value(body) {
            Ok(value) => parsed = Some(value),
            Err(json::JsonError::BadJson(_)) if !strict => {
                let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
                    ApiError::BadRequest("M_NOT_JSON", format!("invalid JSON: {e}"))
                })?;
                lenient = Some(value);
            }
            Err(e) => return Err(json_error(e)),
        }
    }
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if let Some(content) = lenient {
        verify_lenient(x, ours, method, path_and_query, content, map)
            .map_err(|e| unauthorized(format!("invalid X-Matrix signature: {e}")))?;
        return Ok(None);
    }
    let request = axum::http::Request::builder()
        .method(method.clone())
        .uri(path_and_query)
        .body(body.clone())
        .map_err(|e| ApiError::BadRequest("M_UNRECOGNIZED", e.to_string()))?;
    x.verify_http_request(&request, ours, map)
        .map_err(|e| unauthorized(format!("invalid X-Matrix signature: {e}")))?;
    Ok(parsed)
}

/// Checks an X-Matrix signature over a body that is JSON but not canonical JSON (floats): the
/// signed object is serialised with sorted keys and no spaces, as the sender did.
fn verify_lenient(
    x: &XMatrix,
    ours: &ruma::ServerName,
    method: &Method,
    path_and_query: &str,
    content: serde_json::Value,
    keys: &ruma::signatures::PublicKeyMap,
) -> Result<(), String> {
    let object = serde_json::json!({
        "method": method.as_str(),
        "uri": path_and_query,
        "origin": x.origin.as_str(),
        "destination": ours.as_str(),
        "content": content,
    });
    let bytes = serde_json::to_vec(&object).map_err(|e| e.to_string())?;
    let key = keys
        .get(x.origin.as_str())
        .and_then(|set| set.get(x.key.as_str()))
        .ok_or("no key for the origin")?;
    ruma::signatures::verify_canonical_json_bytes(
        &ruma::SigningKeyAlgorithm::Ed25519,
        key.as_bytes(),
        x.sig.as_bytes(),
        &bytes,
    )
    .map_err(|e| e.to_string())
}

/// Splits a raw query string into decoded pairs, keeping repeated keys.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A form-encoded query value: `+` is a space, `%XX` a byte.
fn decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// The X-Matrix parameters with every value quoted and no blanks around the commas. The spec
/// allows unquoted values such as `origin=example.org:8448` and blanks around `,` (as RFC 9110's
/// auth-param does), and Synapse sends or accepts them; ruma's parser takes values as RFC 7235
/// tokens, which cannot hold a `:`. Quoting them first keeps ruma the only X-Matrix parser.
pub fn quote_params(header: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, params)) = header.trim().split_once(char::is_whitespace) else {
        return header.into();
    };
    let mut parts = Vec::new();
    let (mut current, mut quoted, mut escaped) = (String::new(), false, false);
    for c in params.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    let params: Vec<String> = parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((name, value)) => {
                let value = value.trim();
                if value.starts_with('"') {
                    format!("{}={value}", name.trim())
                } else {
                    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
                    format!("{}=\"{escaped}\"", name.trim())
                }
            }
            None => p.to_owned(),
        })
        .collect();
    format!("{scheme} {}", params.join(",")).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 19.6: unquoted values (with a `:`) and blanks around commas, as the spec allows.
    #[test]
    fn x_matrix_values_may_be_unquoted_and_commas_spaced() {
        let lenient =
            "X-Matrix origin=a.example:8448 , destination=\"b.example\",key=ed25519:k1, sig=c2ln";
        let x = XMatrix::parse(quote_params(lenient).as_ref()).expect("parsed");
        assert_eq!(x.origin.as_str(), "a.example:8448");
        assert_eq!(x.destination.as_ref().map(|d| d.as_str()), Some("b.example"));
        assert_eq!(x.key.as_str(), "ed25519:k1");
        let strict = "X-Matrix origin=\"a.example\",key=\"ed25519:k1\",sig=\"c2ln\"";
        assert_eq!(quote_params(strict), strict);
        assert!(
            XMatrix::parse(lenient).is_err(),
            "ruma alone refuses it: the test means something"
        );
        // A quoted value keeps its commas and quotes.
        let tricky = "X-Matrix origin=\"a,b\\\"c\",key=k";
        assert_eq!(quote_params(tricky), "X-Matrix origin=\"a,b\\\"c\",key=\"k\"");
    }

    #[test]
    fn repeated_keys_and_decoding() {
        let q = parse_query("ver=9&ver=10&ver=org.matrix.msc%2Ex&a=b+c&empty&bad=%zz&tail=%4");
        assert_eq!(q.iter().filter(|(k, _)| k == "ver").count(), 3);
        assert_eq!(q[2].1, "org.matrix.msc.x");
        assert_eq!(q[3].1, "b c");
        assert_eq!(q[4], ("empty".to_owned(), String::new()));
        assert_eq!(q[5].1, "%zz");
        assert_eq!(q[6].1, "%4");
    }

    #[test]
    fn x_matrix_header_parsing_is_lenient() {
        for header in [
            r#"X-Matrix origin="a.example:8448",destination="b.example",key="ed25519:k1",sig="ABCD""#,
            r#"X-Matrix key="ed25519:k1", sig="ABCD", origin=a.example, unknown="x""#,
            r#"x-matrix ORIGIN="a.example",Key="ed25519:k1",SIG=ABCD"#,
        ] {
            let x = XMatrix::parse(header).unwrap_or_else(|e| panic!("{header}: {e}"));
            assert!(x.origin.as_str().starts_with("a.example"));
            assert_eq!(x.key.as_str(), "ed25519:k1");
        }
        assert!(XMatrix::parse("Bearer abc").is_err());
        assert!(XMatrix::parse(r#"X-Matrix origin="a.example""#).is_err());
    }
}
