//! `GET /events`: server-sent events of queue changes, for live UIs. A moderator's stream carries
//! only the changes of rooms they moderate (checked per event, so a changed power level counts
//! from the next event on) and `resync`.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::AdminUser;
use crate::service::AppState;

pub async fn stream(
    State(app): State<AppState>,
    user: AdminUser,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut rx = app.queue_events.subscribe();
    let scope = user.scope(&app);
    let stream = async_stream(move |tx| async move {
        loop {
            let event = match rx.recv().await {
                Ok(e) => e,
                Err(RecvError::Lagged(_)) => knockd_shared::QueueEvent {
                    kind: "resync".into(),
                    knock_id: None,
                    room_id: None,
                    status: None,
                },
                Err(RecvError::Closed) => return,
            };
            match scope.shows(&app, &event).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "event stream: scope check failed; event withheld");
                    continue;
                }
            }
            let data = serde_json::to_string(&event).unwrap_or_default();
            if tx.send(Ok(Event::default().event(event.kind.clone()).data(data))).await.is_err() {
                return;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// A stream fed by a task through a bounded channel; the task stops when the client goes away.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
