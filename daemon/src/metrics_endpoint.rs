//! `GET /metrics` on the metrics listener (off by default, loopback unless allowed): what the
//! recorder counted, and what the database knows now (pending knocks per room, the outbox per
//! destination).

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{
    matrix::now_ms,
    service::AppState,
    store::{StoreError, knocks, outbox},
};

pub fn router(app: AppState) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(app)
}

async fn scrape(State(app): State<AppState>) -> Response {
    let read = app
        .db
        .read(|conn| -> Result<_, StoreError> {
            Ok((knocks::pending_by_room(conn)?, outbox::depth_by_destination(conn)?))
        })
        .await;
    let (pending, depth) = match read {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the database did not answer");
            return (StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}\n")).into_response();
        }
    };
    let now = now_ms();
    let ages = |rows: Vec<(String, i64, i64)>| -> Vec<(String, i64, f64)> {
        rows.into_iter()
            .map(|(name, n, oldest)| (name, n, (now - oldest).max(0) as f64 / 1000.0))
            .collect()
    };
    app.metrics.set_pending(&ages(pending));
    app.metrics.set_outbox(&ages(depth));
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], app.metrics.render()).into_response()
}
