//! The room engine: every event that enters a room passes through here, whoever made it.
//!
//! ```text
//!  send_knock / send_join / send_leave ─┐
//!  /send PDUs, gap fills ───────────────┼─▶ format ─▶ signatures ─▶ room writer
//!  our own events (approve, deny, set) ─┘                               │
//!     auth_events ─▶ state_before ─▶ (auth against it) ─▶ soft_fail ─▶ persist ─▶ effects
//! ```
//!
//! One writer per room at a time holds the room in memory ([`LoadedRoom`]): its current state,
//! extremities and recent states as persistent maps. Writes queued for a room while another
//! runs go together in one database transaction (group commit); each write works on a copy of
//! the room and keeps it only when it succeeds. At the start of every batch the room row is
//! locked and its version read: when another knockd wrote the room since, the room is read
//! again. A write that returns has committed.
//!
//! Steps, one file each, depending only on the ones before them: `format` and `signatures` (no
//! room state, before the writer), `auth_events`, `state_before` (with `resolve`), `soft_fail`,
//! `persist`, `effects`; `accept` runs them for a received event, `local` for our own.

pub mod accept;
pub mod auth_events;
pub mod effects;
pub mod forks;
pub mod format;
pub mod loaded;
pub mod local;
pub mod pending;
pub mod persist;
pub mod resolve;
pub mod signatures;
pub mod soft_fail;
pub mod state_before;

use std::{
    any::Any,
    cell::RefCell,
    collections::HashMap,
    sync::{Arc, Mutex},
};

use diesel::Connection;
pub use loaded::{LoadedRoom, RoomCtx, StateKey, StateMap};
use ruma::{CanonicalJsonObject, EventId, OwnedEventId};
use tokio::sync::oneshot;

use crate::{
    bounded::BoundedMap,
    matrix::{KeyRing, Pdu},
    store::{Db, DbConn, StoreError, events as ev, rooms, savepoint},
};

/// Writes per transaction at most: bounds how long the first writer of a batch waits.
const MAX_BATCH: usize = 64;
/// Rooms held in memory at most; the least recently used one goes first.
pub const MAX_ROOMS: usize = 256;

/// Reads stored PDUs by event ID.
pub fn load_pdus(conn: &mut DbConn, ids: &[String]) -> Result<Vec<Pdu>, StoreError> {
    ev::pdus(conn, ids)?.into_iter().map(|(id, text)| parse_stored(&id, &text)).collect()
}

pub fn parse_stored(id: &str, text: &str) -> Result<Pdu, StoreError> {
    let json: CanonicalJsonObject =
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("event {id}: {e}")))?;
    let event_id = OwnedEventId::try_from(id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Pdu::from_canonical(event_id, json).map_err(StoreError::Corrupt)
}

/// The PDUs among `ids` that may be cited as auth events (accepted or outlier events of this
/// room): from memory, the rest in one query.
pub fn usable_pdus(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    ids: &[OwnedEventId],
) -> Result<HashMap<OwnedEventId, Arc<Pdu>>, StoreError> {
    read_pdus(conn, room, ids, ev::AUTHORISED)
}

/// The PDUs among `ids` that a stored state may hold (soft-failed ones too; see
/// [`ev::IN_STATE`]): from memory, the rest in one query.
pub fn state_pdus(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    ids: &[OwnedEventId],
) -> Result<HashMap<OwnedEventId, Arc<Pdu>>, StoreError> {
    read_pdus(conn, room, ids, ev::IN_STATE)
}

fn read_pdus(
    conn: &mut DbConn,
    room: &mut LoadedRoom,
    ids: &[OwnedEventId],
    statuses: &[&str],
) -> Result<HashMap<OwnedEventId, Arc<Pdu>>, StoreError> {
    let mut out = HashMap::with_capacity(ids.len());
    let mut missing = Vec::new();
    for id in ids {
        match room.pdu(id) {
            Some(p) => {
                out.insert(id.clone(), p);
            }
            None => match room.pending.event(id).filter(|e| statuses.contains(&e.status)) {
                Some(e) => {
                    out.insert(id.clone(), e.pdu.clone());
                }
                None => missing.push(id.to_string()),
            },
        }
    }
    if !missing.is_empty() {
        let room_id = room.ctx.room_id.to_string();
        for (id, status, text) in ev::room_pdus_with_status(conn, &room_id, &missing, statuses)? {
            let pdu = Arc::new(parse_stored(&id, &text)?);
            // Memory holds only what may be cited as an auth event.
            if ev::AUTHORISED.contains(&status.as_str()) {
                room.remember_pdu(pdu.clone());
            }
            out.insert(pdu.event_id.clone(), pdu);
        }
    }
    Ok(out)
}

/// Finds events for state resolution: memory first, then the store (events of the room a stored
/// state may hold), each read once. A database failure fails the resolution (see
/// [`Fetcher::failure`]) rather than passing for a missing event.
pub struct Fetcher<'a> {
    conn: RefCell<&'a mut DbConn>,
    room: &'a LoadedRoom,
    read: RefCell<HashMap<OwnedEventId, Option<Arc<Pdu>>>>,
    failed: RefCell<Option<StoreError>>,
}

impl<'a> Fetcher<'a> {
    pub fn new(conn: &'a mut DbConn, room: &'a LoadedRoom) -> Self {
        Self {
            conn: RefCell::new(conn),
            room,
            read: RefCell::new(HashMap::new()),
            failed: RefCell::new(None),
        }
    }

    pub fn get(&self, id: &EventId) -> Option<Arc<Pdu>> {
        if let Some(p) = self.held(id) {
            return Some(p);
        }
        if let Some(found) = self.read.borrow().get(id) {
            return found.clone();
        }
        let room_id = self.room.ctx.room_id.to_string();
        let ids = [id.to_string()];
        let rows = ev::room_pdus(&mut self.conn.borrow_mut(), &room_id, &ids, ev::IN_STATE);
        let found = match rows {
            Ok(rows) => match rows.into_iter().next().map(|(id, text)| parse_stored(&id, &text)) {
                Some(Ok(pdu)) => Some(Arc::new(pdu)),
                Some(Err(e)) => {
                    self.failed.borrow_mut().get_or_insert(e);
                    None
                }
                None => None,
            },
            Err(e) => {
                self.failed.borrow_mut().get_or_insert(e);
                None
            }
        };
        self.read.borrow_mut().insert(id.to_owned(), found.clone());
        found
    }

    /// An event in memory: cached, or stored by this batch and not written yet.
    fn held(&self, id: &EventId) -> Option<Arc<Pdu>> {
        self.room.pdu(id).or_else(|| {
            let e = self.room.pending.event(id)?;
            ev::IN_STATE.contains(&e.status).then(|| e.pdu.clone())
        })
    }

    /// Reads those of `ids` not in memory or read before, a few hundred per query.
    pub fn prefetch(&self, ids: &[OwnedEventId]) {
        let wanted: Vec<OwnedEventId> = {
            let read = self.read.borrow();
            ids.iter()
                .filter(|id| self.held(id).is_none() && !read.contains_key(*id))
                .cloned()
                .collect()
        };
        let room_id = self.room.ctx.room_id.to_string();
        for chunk in wanted.chunks(500) {
            let asked: Vec<String> = chunk.iter().map(|id| id.to_string()).collect();
            let rows = ev::room_pdus(&mut self.conn.borrow_mut(), &room_id, &asked, ev::IN_STATE);
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) => {
                    self.failed.borrow_mut().get_or_insert(e);
                    return;
                }
            };
            let mut read = self.read.borrow_mut();
            for id in chunk {
                read.entry(id.clone()).or_insert(None);
            }
            for (id, text) in rows {
                match parse_stored(&id, &text) {
                    Ok(pdu) => {
                        read.insert(pdu.event_id.clone(), Some(Arc::new(pdu)));
                    }
                    Err(e) => {
                        self.failed.borrow_mut().get_or_insert(e);
                    }
                }
            }
        }
    }

    /// The first database failure met, if any: what was answered after it cannot be trusted.
    pub fn failure(self) -> Option<StoreError> {
        self.failed.into_inner()
    }
}

/// What a committed batch tells the rest of knockd.
#[derive(Debug, Default)]
pub struct Applied {
    /// Outbound work was queued: wake the sender.
    pub outbox: bool,
    /// Queue changes for live admin UIs.
    pub events: Vec<knockd_shared::QueueEvent>,
    /// For each of `events`, the event ID of a new knock whose id the batch's end gives.
    new_knocks: Vec<Option<String>>,
}

impl Applied {
    /// A new knock (queued by this batch: its id is known once written).
    pub fn publish_knock(&mut self, event_id: &str, room_id: &str) {
        self.publish("knock", None, room_id, Some(crate::store::knocks::PENDING));
        if let Some(last) = self.new_knocks.last_mut() {
            *last = Some(event_id.to_owned());
        }
    }

    /// Takes in what a later write of the batch applied.
    fn absorb(&mut self, mut other: Applied) {
        self.outbox |= other.outbox;
        self.events.append(&mut other.events);
        self.new_knocks.append(&mut other.new_knocks);
    }

    /// Fills in the ids new knocks got.
    fn name_knocks(&mut self, ids: &imbl::HashMap<String, i64>) {
        for (event, new) in self.events.iter_mut().zip(&self.new_knocks) {
            if let Some(event_id) = new {
                event.knock_id = ids.get(event_id).copied();
            }
        }
    }

    pub fn publish(
        &mut self,
        kind: &str,
        knock_id: Option<i64>,
        room_id: &str,
        status: Option<&str>,
    ) {
        self.events.push(knockd_shared::QueueEvent {
            kind: kind.to_owned(),
            knock_id,
            room_id: Some(room_id.to_owned()),
            status: status.map(str::to_owned),
        });
        self.new_knocks.push(None);
    }
}

/// One write's view of its room: the transaction, the room in memory (a copy kept only if the
/// write succeeds) and what it applied.
///
/// The engine keeps some of what a batch writes in memory until the batch ends (the room's
/// current state): code outside the engine reaches the transaction through [`RoomTxn::conn`] or
/// [`RoomTxn::parts`], which write that out first, so the store it reads is the room as it is.
pub struct RoomTxn<'a> {
    conn: &'a mut DbConn,
    pub room: &'a mut LoadedRoom,
    pub keys: &'a KeyRing,
    pub applied: &'a mut Applied,
    savepoint: Savepoint,
}

/// Whether a write has its own savepoint in the batch's transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Savepoint {
    /// Not needed: the write is alone in its transaction (or inside a savepoint of its own).
    Off,
    /// Opened when the write first writes to the store directly; until then everything it
    /// wrote is held back in the room, which a failure restores.
    Lazy,
    Open,
}

impl<'a> RoomTxn<'a> {
    pub fn new(
        conn: &'a mut DbConn,
        room: &'a mut LoadedRoom,
        keys: &'a KeyRing,
        applied: &'a mut Applied,
    ) -> Self {
        Self { conn, room, keys, applied, savepoint: Savepoint::Off }
    }

    /// The transaction, with what the batch holds back written out first.
    pub fn conn(&mut self) -> Result<&mut DbConn, StoreError> {
        self.writing()?;
        persist::flush(self.conn, self.room)?;
        Ok(self.conn)
    }

    /// [`RoomTxn::conn`], with the room and the keys beside it.
    pub fn parts(&mut self) -> Result<(&mut DbConn, &mut LoadedRoom, &'a KeyRing), StoreError> {
        self.writing()?;
        persist::flush(self.conn, self.room)?;
        Ok((self.conn, self.room, self.keys))
    }

    /// The transaction as it is, for the engine's own steps that read the store, or write only
    /// what the room holds back (see [`pending`]).
    fn engine(&mut self) -> (&mut DbConn, &mut LoadedRoom) {
        (self.conn, self.room)
    }

    /// [`RoomTxn::engine`] for a step that writes to the store directly.
    fn engine_writing(&mut self) -> Result<(&mut DbConn, &mut LoadedRoom), StoreError> {
        self.writing()?;
        Ok((self.conn, self.room))
    }

    /// The write is about to change the store directly: from here a failure must be undone in
    /// the store too.
    fn writing(&mut self) -> Result<(), StoreError> {
        // What the batch read at its start may no longer be what the store holds.
        if !self.room.known.is_empty() {
            self.room.known = imbl::HashMap::new();
        }
        self.open_savepoint()
    }

    fn open_savepoint(&mut self) -> Result<(), StoreError> {
        if self.savepoint == Savepoint::Lazy {
            savepoint::open(self.conn)?;
            self.savepoint = Savepoint::Open;
        }
        Ok(())
    }
}

type Output = Box<dyn Any + Send>;
type Work = Box<dyn FnOnce(&mut RoomTxn<'_>) -> (bool, Output) + Send>;

struct Job {
    work: Work,
    reply: oneshot::Sender<Result<Output, StoreError>>,
    /// Events the write will ask about (see [`Engine::write_events`]).
    events: Vec<OwnedEventId>,
}

#[derive(Default)]
struct Slot {
    jobs: Mutex<Vec<Job>>,
    /// The room in memory, held by the batch running now.
    leader: Arc<tokio::sync::Mutex<Option<LoadedRoom>>>,
    /// The room as of the last committed batch, for reads that need no lock.
    snapshot: Mutex<Option<LoadedRoom>>,
}

/// The per-room writers.
pub struct Engine {
    db: Db,
    keys: Arc<KeyRing>,
    /// Past this many forward extremities a batch ends with a dummy event (0: never).
    dummy_event_threshold: usize,
    slots: Mutex<BoundedMap<String, Arc<Slot>>>,
    outbox_wake: Arc<tokio::sync::Notify>,
    queue_events: tokio::sync::broadcast::Sender<knockd_shared::QueueEvent>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(
        db: Db,
        keys: Arc<KeyRing>,
        outbox_wake: Arc<tokio::sync::Notify>,
        queue_events: tokio::sync::broadcast::Sender<knockd_shared::QueueEvent>,
    ) -> Self {
        Self {
            db,
            keys,
            dummy_event_threshold: crate::config::DEFAULT_DUMMY_EVENT_THRESHOLD,
            slots: Mutex::new(BoundedMap::new(MAX_ROOMS)),
            outbox_wake,
            queue_events,
            metrics: None,
        }
    }

    /// Counts each batch's writes in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Past `threshold` forward extremities a batch ends with a dummy event (0: never).
    pub fn with_dummy_event_threshold(mut self, threshold: usize) -> Self {
        self.dummy_event_threshold = threshold;
        self
    }

    fn slot(&self, room_id: &str) -> Arc<Slot> {
        let unused = |s: &Arc<Slot>| Arc::strong_count(s) == 1;
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(room_id.to_owned(), Arc::default, unused)
            .clone()
    }

    /// Runs `work` on the room in a transaction holding the room, possibly together with other
    /// writes to it; returns once that transaction has committed (or failed). A room not hosted
    /// here answers `StoreError::NotFound`.
    pub async fn write<T, E, F>(&self, room_id: &str, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut RoomTxn<'_>) -> Result<T, E> + Send + 'static,
    {
        self.write_events(room_id, Vec::new(), work).await
    }

    /// [`Engine::write`] for work that will ask whether `events` are stored: the batch asks for
    /// all its writes' events in one query.
    pub async fn write_events<T, E, F>(
        &self,
        room_id: &str,
        events: Vec<OwnedEventId>,
        work: F,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut RoomTxn<'_>) -> Result<T, E> + Send + 'static,
    {
        let work: Work = Box::new(move |txn| {
            let result = work(txn);
            (result.is_ok(), Box::new(result) as Output)
        });
        let slot = self.slot(room_id);
        let (reply, mut answer) = oneshot::channel();
        slot.jobs.lock().unwrap_or_else(|e| e.into_inner()).push(Job { work, reply, events });
        let unpack = |out: Result<Output, StoreError>| -> Result<T, E> {
            match out {
                Ok(any) => match any.downcast::<Result<T, E>>() {
                    Ok(result) => *result,
                    Err(_) => {
                        Err(StoreError::Corrupt("a write answered the wrong type".into()).into())
                    }
                },
                Err(e) => Err(e.into()),
            }
        };
        loop {
            let leader = slot.leader.clone().lock_owned().await;
            // A previous leader may have taken our write; it answers before letting go.
            match answer.try_recv() {
                Ok(out) => return unpack(out),
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(StoreError::Pool("the write was dropped".to_owned()).into());
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let jobs: Vec<Job> = {
                let mut jobs = slot.jobs.lock().unwrap_or_else(|e| e.into_inner());
                let n = jobs.len().min(MAX_BATCH);
                jobs.drain(..n).collect()
            };
            if let Some(metrics) = &self.metrics {
                metrics.room_batch(jobs.len());
            }
            let batch = tokio::spawn(run_batch(
                self.db.clone(),
                self.keys.clone(),
                self.dummy_event_threshold,
                slot.clone(),
                room_id.to_owned(),
                jobs,
                leader,
            ));
            match batch.await {
                Ok(applied) => self.announce(applied),
                Err(e) => tracing::error!(%room_id, error = %e, "room batch failed"),
            }
            match answer.try_recv() {
                Ok(out) => return unpack(out),
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(StoreError::Pool("the write was dropped".to_owned()).into());
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            // Ours was beyond this batch's limit: lead (or wait for) the next one.
        }
    }

    fn announce(&self, applied: Applied) {
        if applied.outbox {
            self.outbox_wake.notify_one();
        }
        for event in applied.events {
            let _ = self.queue_events.send(event);
        }
    }

    /// The room as this engine last wrote it, possibly behind another instance's writes (no
    /// version read): for checks the room's write repeats. Read as [`Engine::snapshot`] when
    /// not held.
    /// The room's version if the room is in memory (no database read: for labels and logs).
    pub fn version_in_memory(&self, room_id: &str) -> Option<String> {
        let held = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.get(room_id).cloned()
        }?;
        let snapshot = held.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        snapshot.as_ref().map(|room| room.ctx.version.to_string())
    }

    pub async fn snapshot_unchecked(
        &self,
        room_id: &str,
    ) -> Result<Option<LoadedRoom>, StoreError> {
        let held = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.get(room_id).cloned()
        };
        if let Some(room) =
            held.and_then(|s| s.snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone())
        {
            return Ok(Some(room));
        }
        self.snapshot(room_id).await
    }

    /// The room as of its last committed write, read from the store on first use (and, on
    /// PostgreSQL, again when another instance wrote it since). Answers questions (templates)
    /// without waiting for writes in progress; `None` when the room is not hosted here.
    pub async fn snapshot(&self, room_id: &str) -> Result<Option<LoadedRoom>, StoreError> {
        let held = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.get(room_id).cloned()
        };
        let held = held.and_then(|s| s.snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone());
        // SQLite has one knockd: memory is the truth. On PostgreSQL another instance may have
        // written the room: one read of its version says whether memory is still it.
        if let Some(room) = &held
            && self.db.backend() == crate::store::Backend::Sqlite
        {
            return Ok(Some(room.clone()));
        }
        let id = room_id.to_owned();
        let version = self
            .db
            .read(move |conn| Ok::<_, StoreError>(rooms::get(conn, &id)?.map(|r| r.version)))
            .await?;
        // A room nobody hosts takes no place among the rooms held in memory.
        let Some(version) = version else { return Ok(None) };
        if let Some(room) = held.filter(|r| r.version == version) {
            return Ok(Some(room));
        }
        match self.write(room_id, |txn| Ok::<_, StoreError>(txn.room.clone())).await {
            Ok(room) => Ok(Some(room)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Why a batch's transaction did not commit.
enum BatchError {
    Store(StoreError),
    /// The batch's only write failed: its transaction rolls back; the room as before it and
    /// the write's answer come out.
    Alone(Box<LoadedRoom>, Output),
}

impl From<StoreError> for BatchError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<diesel::result::Error> for BatchError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Store(e.into())
    }
}

/// Runs one batch in a task of its own (a leader whose request goes away does not abandon the
/// others), answering every write; returns what the committed batch applied.
async fn run_batch(
    db: Db,
    keys: Arc<KeyRing>,
    dummy_event_threshold: usize,
    slot: Arc<Slot>,
    room_id: String,
    jobs: Vec<Job>,
    mut leader: tokio::sync::OwnedMutexGuard<Option<LoadedRoom>>,
) -> Applied {
    let held = leader.take();
    let asked: Vec<String> =
        jobs.iter().flat_map(|j| j.events.iter().map(|id| id.to_string())).collect();
    let (works, replies): (Vec<Work>, Vec<_>) = jobs.into_iter().map(|j| (j.work, j.reply)).unzip();
    let outcome = db
        .write(move |conn| -> Result<_, BatchError> {
            let Some(version) = rooms::lock_version(conn, &room_id)? else {
                return Err(StoreError::NotFound.into());
            };
            let mut room = match held {
                Some(room) if room.version == version => room,
                _ => LoadedRoom::load(conn, &room_id)?.ok_or(StoreError::NotFound)?,
            };
            room.touched = false;
            room.knock_ids = imbl::HashMap::new();
            room.known = imbl::HashMap::new();
            if !asked.is_empty() {
                let rows = ev::get_many(conn, &asked)?;
                for id in &asked {
                    let row = rows.iter().find(|r| &r.event_id == id).cloned();
                    if let Ok(id) = OwnedEventId::try_from(id.as_str()) {
                        room.known.insert(id, row);
                    }
                }
            }
            let alone = works.len() == 1;
            let mut outputs = Vec::with_capacity(works.len());
            let mut applied = Applied::default();
            for work in works {
                let before = room.clone();
                let mut own = Applied::default();
                // Alone in the batch, the transaction itself undoes a failure. Otherwise a write
                // gets a savepoint when it first writes to the store directly; what it held back
                // goes with the room's copy.
                // On SQLite a savepoint costs no round trip, and an I/O error or a full disk
                // rolls the whole transaction back by itself (where no savepoint would notice):
                // every write has one from the start.
                let eager = matches!(conn, DbConn::Sqlite(_));
                let mut txn = RoomTxn::new(conn, &mut room, &keys, &mut own);
                if !alone {
                    txn.savepoint = Savepoint::Lazy;
                    if eager {
                        txn.open_savepoint()?;
                    }
                }
                let (ok, out) = work(&mut txn);
                let opened = txn.savepoint == Savepoint::Open;
                match (ok, opened) {
                    (false, _) if alone => return Err(BatchError::Alone(Box::new(before), out)),
                    (true, true) => savepoint::release(conn)?,
                    (false, true) => savepoint::roll_back(conn)?,
                    // A failed read leaves a PostgreSQL transaction unusable: then the whole
                    // batch fails rather than commit without it.
                    (false, false) if !savepoint::usable(conn) => {
                        return Err(StoreError::Pool("a read failed mid-batch".into()).into());
                    }
                    _ => {}
                }
                if ok {
                    applied.absorb(own);
                } else {
                    room = before;
                }
                outputs.push(out);
            }
            if room.touched {
                // Too many forks left: a dummy event joins some, in the same transaction (in
                // a savepoint: a failure undoes only itself).
                let before = room.clone();
                let mut own = Applied::default();
                let healed = conn.transaction(|c| {
                    let mut txn = RoomTxn::new(c, &mut room, &keys, &mut own);
                    forks::heal(&mut txn, dummy_event_threshold)
                });
                match healed {
                    Ok(_) => applied.absorb(own),
                    Err(e) => {
                        tracing::warn!(%room_id, error = %e, "dummy event not sent");
                        room = before;
                    }
                }
            }
            // What the batch held back in memory (rows, extremities, the current state), in a
            // few statements.
            persist::flush(conn, &mut room)?;
            applied.name_knocks(&room.knock_ids);
            if room.touched {
                room.version = version + 1;
                rooms::set_version(conn, &room_id, room.version)?;
            }
            Ok((room, outputs, applied))
        })
        .await;
    match outcome {
        Ok((room, outputs, applied)) => {
            *slot.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(room.clone());
            *leader = Some(room);
            for (reply, out) in replies.into_iter().zip(outputs) {
                let _ = reply.send(Ok(out));
            }
            applied
        }
        Err(BatchError::Alone(room, out)) => {
            *leader = Some(*room);
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Ok(out));
            }
            Applied::default()
        }
        Err(BatchError::Store(e)) => {
            // Memory may be ahead of what committed: read the room again next time.
            *slot.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = None;
            let why = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(match e {
                    StoreError::NotFound => StoreError::NotFound,
                    _ => StoreError::Pool(format!("the write failed: {why}")),
                }));
            }
            Applied::default()
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod attack_tests;
