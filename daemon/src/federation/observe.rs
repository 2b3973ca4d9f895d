//! Every federation request, whatever it asks: counted and timed in the metrics by endpoint and
//! status, and one access-log line (target `knockd::access`) with the origin it claims.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::header::AUTHORIZATION,
    middleware::Next,
    response::Response,
};

use crate::service::AppState;

pub async fn observe(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unrecognized".to_owned(), |p| p.as_str().to_owned());
    // What the request says it is from; the endpoint checks the signature.
    let origin = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(claimed_origin)
        .unwrap_or_else(|| "-".to_owned());
    let method = request.method().clone();
    let response = next.run(request).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    app.metrics.federation_request(&endpoint, status, took);
    tracing::info!(
        target: "knockd::access",
        %origin,
        %method,
        endpoint,
        status,
        latency_ms = took.as_micros() as f64 / 1000.0,
        "federation request"
    );
    response
}

/// The `origin` parameter of an X-Matrix header, quoted or not; `invalid` when it is not shaped
/// like a server name.
fn claimed_origin(header: &str) -> Option<String> {
    let params = header.trim_start().get(8..).filter(|_| {
        header.trim_start().get(..8).is_some_and(|s| s.eq_ignore_ascii_case("x-matrix"))
    })?;
    params.split(',').find_map(|param| {
        let (name, value) = param.split_once('=')?;
        (name.trim() == "origin").then(|| {
            // Only what a server name may hold; anything else could forge log fields.
            let value = value.trim().trim_matches('"');
            let name_like = |c: char| c.is_ascii_alphanumeric() || "-.:[]_".contains(c);
            if !value.is_empty() && value.len() <= 255 && value.chars().all(name_like) {
                value.to_owned()
            } else {
                "invalid".to_owned()
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::claimed_origin;

    #[test]
    fn origin_from_the_header() {
        let quoted = r#"X-Matrix origin="a.example:8448",destination="b",key="ed25519:k",sig="s""#;
        assert_eq!(claimed_origin(quoted).as_deref(), Some("a.example:8448"));
        let bare = "x-matrix key=\"ed25519:k\", origin=a.example ,sig=s";
        assert_eq!(claimed_origin(bare).as_deref(), Some("a.example"));
        assert_eq!(claimed_origin("Bearer abc"), None);
        assert_eq!(claimed_origin("X-Matrix key=k"), None);
        let forged = r#"X-Matrix origin="x status=200 endpoint=/admin",key="k",sig="s""#;
        assert_eq!(claimed_origin(forged).as_deref(), Some("invalid"));
    }
}
