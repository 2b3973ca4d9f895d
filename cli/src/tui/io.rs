//! The TUI's I/O: keys from the terminal, knockd's event stream (reconnecting by itself), and
//! the effects the state asks for, each answered with a message.

use std::time::Duration;

use knockd_shared::{AdminClient, BulkItem, ClientError, QueueEvent};
use ratatui::crossterm::event::{self, Event, KeyEventKind};
use tokio::{sync::mpsc::UnboundedSender, task::JoinHandle};

use super::app::{Effect, FetchError, Msg, Verb};
use crate::{exit::CliError, output::escape, sse::SseParser};

/// Retry delays of the event stream: first 1 s, then every 2 s.
const RETRY_FIRST: Duration = Duration::from_millis(1000);
const RETRY_MAX: Duration = Duration::from_millis(2000);

/// Rooms fetched for the room filter.
const ROOMS: u32 = 1000;

/// A failure as the state shows it.
pub fn fetch_error(e: ClientError) -> FetchError {
    match e {
        ClientError::Unreachable { message, .. } => {
            // reqwest says "error sending request for url (…)": the URL is in the banner already.
            let short = message.split(" for url (").next().unwrap_or(&message);
            FetchError { message: escape(short), unreachable: true }
        }
        other => FetchError { message: CliError::from(other).message, unreachable: false },
    }
}

/// Reads terminal events on a thread of its own (crossterm's reads block).
pub fn read_keys(tx: UnboundedSender<Msg>) {
    std::thread::spawn(move || {
        loop {
            let msg = match event::read() {
                Ok(Event::Key(key)) if key.kind != KeyEventKind::Release => Msg::Key(key),
                Ok(Event::Resize(width, height)) => Msg::Resize { width, height },
                Ok(_) => continue,
                Err(_) => return,
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    });
}

/// Follows `GET /events`, reconnecting with a short backoff; ends when the receiver is gone.
pub async fn stream_events(client: AdminClient, tx: UnboundedSender<Msg>) {
    let mut delay = RETRY_FIRST;
    loop {
        match client.events().await {
            Ok(mut response) => {
                delay = RETRY_FIRST;
                let _ = tx.send(Msg::StreamUp);
                let mut parser = SseParser::default();
                let why = loop {
                    match response.chunk().await {
                        Ok(Some(bytes)) => {
                            for data in parser.push(&bytes) {
                                if let Ok(event) = serde_json::from_str::<QueueEvent>(&data) {
                                    let _ = tx.send(Msg::Queue(event));
                                }
                            }
                        }
                        Ok(None) => break "knockd ended the event stream".to_owned(),
                        Err(e) => break format!("lost the event stream: {e}"),
                    }
                };
                let _ = tx
                    .send(Msg::StreamDown(FetchError { message: escape(&why), unreachable: true }));
            }
            Err(e) => {
                let _ = tx.send(Msg::StreamDown(fetch_error(e)));
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = RETRY_MAX;
    }
}

/// Runs effects as tasks; a new page or detail request cancels the previous one.
pub struct Runner {
    client: AdminClient,
    tx: UnboundedSender<Msg>,
    page: Option<JoinHandle<()>>,
    detail: Option<JoinHandle<()>>,
}

impl Runner {
    pub fn new(client: AdminClient, tx: UnboundedSender<Msg>) -> Self {
        Self { client, tx, page: None, detail: None }
    }

    pub fn run(&mut self, effect: Effect) {
        let (client, tx) = (self.client.clone(), self.tx.clone());
        match effect {
            Effect::Fetch { seq, start, query } => {
                replace(&mut self.page, async move {
                    let result = client.list_knocks(&query).await.map_err(fetch_error);
                    let _ = tx.send(Msg::Page { seq, start, result });
                });
            }
            Effect::FetchRooms => {
                tokio::spawn(async move {
                    let result = client.list_rooms(None, Some(ROOMS)).await.map_err(fetch_error);
                    let _ = tx.send(Msg::Rooms(result));
                });
            }
            Effect::FetchDetail(id) => {
                replace(&mut self.detail, async move {
                    let result = client.knock(id).await.map(Box::new).map_err(fetch_error);
                    let _ = tx.send(Msg::Detail { id, result });
                });
            }
            Effect::Decide { verb, ids, reason } => {
                tokio::spawn(async move {
                    let result = decide(&client, verb, &ids, reason.as_deref()).await;
                    let _ = tx.send(Msg::Decided { verb, result: result.map_err(fetch_error) });
                });
            }
            Effect::Quit => {}
        }
    }

    /// Stops what is still running.
    pub fn abort(&mut self) {
        self.page.take().into_iter().chain(self.detail.take()).for_each(|t| t.abort());
    }
}

fn replace(slot: &mut Option<JoinHandle<()>>, task: impl Future<Output = ()> + Send + 'static) {
    if let Some(old) = slot.replace(tokio::spawn(task)) {
        old.abort();
    }
}

/// One id through the single endpoint (its API error becomes the item's), several in bulk.
async fn decide(
    client: &AdminClient,
    verb: Verb,
    ids: &[i64],
    reason: Option<&str>,
) -> Result<Vec<BulkItem>, ClientError> {
    let ban = verb == Verb::Ban;
    if let [id] = ids {
        let result = match verb {
            Verb::Approve => client.approve(*id, reason).await,
            Verb::Deny | Verb::Ban => client.deny(*id, reason, ban).await,
        };
        return match result {
            Ok(d) => Ok(vec![BulkItem { id: *id, decision: Some(d), error: None }]),
            Err(ClientError::Api { status, body }) if status != 401 => {
                Ok(vec![BulkItem { id: *id, decision: None, error: Some(body) }])
            }
            Err(e) => Err(e),
        };
    }
    let response = match verb {
        Verb::Approve => client.approve_many(ids, reason).await?,
        Verb::Deny | Verb::Ban => client.deny_many(ids, reason, ban).await?,
    };
    Ok(response.results)
}
