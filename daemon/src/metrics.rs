//! Prometheus metrics (issue "Operations", item 2), through the `metrics` crate and its Prometheus
//! exporter. Each knockd has a recorder of its own rather than the process-wide one, so that
//! several knockd in one process (the tests) count apart. Served on a listener of its own, off
//! by default (`metrics.listen`); what the database knows (pending knocks, the outbox) is read at
//! each scrape.

use std::{collections::BTreeSet, sync::Mutex, time::Duration};

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

const META: Metadata<'static> = Metadata::new("knockd", Level::INFO, Some(module_path!()));

/// Seconds from a knock to its decision: a minute to a week.
const DECISION_BUCKETS: [f64; 9] = [
    60.0,
    300.0,
    900.0,
    3_600.0,
    4.0 * 3_600.0,
    12.0 * 3_600.0,
    86_400.0,
    3.0 * 86_400.0,
    7.0 * 86_400.0,
];
/// Seconds of a request or a wait: a millisecond to ten seconds.
const LATENCY_BUCKETS: [f64; 12] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Writes in one batch of the room engine.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Why a knock was not taken, as a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A rate limit or the room's cap on pending knocks.
    Limit,
    /// The auth rules, the room's ACL, a ban: 403.
    Forbidden,
    /// Malformed, a bad signature: 400.
    Invalid,
    /// A room we do not host.
    NotFound,
    /// Our own failure (the database): 5xx.
    Internal,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::Limit => "limit",
            Refusal::Forbidden => "forbidden",
            Refusal::Invalid => "invalid",
            Refusal::NotFound => "not_found",
            Refusal::Internal => "internal",
        }
    }
}

/// How a knock reached us, as a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    SendKnock,
    Transaction,
}

impl Via {
    fn label(self) -> &'static str {
        match self {
            Via::SendKnock => "send_knock",
            Via::Transaction => "transaction",
        }
    }
}

/// This knockd's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Label values of the gauges set from the database last time: a room or destination that
    /// has none any more is set to 0 rather than left at its old value.
    pending_rooms: Mutex<BTreeSet<String>>,
    outbox_destinations: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let buckets = |builder: PrometheusBuilder, name: &str, values: &[f64]| {
            builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), values)
        };
        // Setting buckets fails only on an empty list: ours are not.
        let builder = Ok(PrometheusBuilder::new())
            .and_then(|b| buckets(b, "knockd_knock_decision_seconds", &DECISION_BUCKETS))
            .and_then(|b| buckets(b, "knockd_federation_request_seconds", &LATENCY_BUCKETS))
            .and_then(|b| buckets(b, "knockd_db_pool_wait_seconds", &LATENCY_BUCKETS))
            .and_then(|b| buckets(b, "knockd_room_batch_writes", &BATCH_BUCKETS))
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let this = Self {
            recorder,
            handle,
            pending_rooms: Mutex::default(),
            outbox_destinations: Mutex::default(),
        };
        this.describe();
        this
    }

    fn describe(&self) {
        let counters = [
            ("knockd_knocks_received_total", "Knocks received, by room version and path."),
            ("knockd_knocks_accepted_total", "Knocks accepted into the queue."),
            ("knockd_knocks_refused_total", "Knocks refused, by reason."),
            ("knockd_decisions_total", "Decisions on knocks, by action and actor kind."),
            ("knockd_outbox_failures_total", "Failed deliveries, by destination."),
            ("knockd_federation_requests_total", "Federation requests, by endpoint and status."),
        ];
        for (name, help) in counters {
            self.recorder.describe_counter(name.into(), None, help.into());
        }
        let gauges = [
            ("knockd_pending_knocks", "Knocks waiting for a decision, by room."),
            ("knockd_oldest_pending_knock_seconds", "Age of the oldest pending knock, by room."),
            ("knockd_outbox_items", "Items waiting to be sent, by destination."),
            (
                "knockd_outbox_oldest_item_seconds",
                "Age of the oldest waiting item, by destination.",
            ),
        ];
        for (name, help) in gauges {
            self.recorder.describe_gauge(name.into(), None, help.into());
        }
        let histograms = [
            ("knockd_knock_decision_seconds", Unit::Seconds, "Time from a knock to its decision."),
            ("knockd_federation_request_seconds", Unit::Seconds, "Federation request latency."),
            ("knockd_db_pool_wait_seconds", Unit::Seconds, "Wait for a database connection."),
            (
                "knockd_room_batch_writes",
                Unit::Count,
                "Writes taken together in one batch of the room engine.",
            ),
        ];
        for (name, unit, help) in histograms {
            self.recorder.describe_histogram(name.into(), Some(unit), help.into());
        }
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder.register_counter(&Key::from_parts(name, labels), &META)
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        self.recorder.register_gauge(&Key::from_parts(name, labels), &META)
    }

    fn histogram(&self, name: &'static str, labels: Vec<Label>) -> Histogram {
        self.recorder.register_histogram(&Key::from_parts(name, labels), &META)
    }

    pub fn knock_received(&self, version: &str, via: Via) {
        let labels =
            vec![Label::new("room_version", version.to_owned()), Label::new("via", via.label())];
        self.counter("knockd_knocks_received_total", labels).increment(1);
    }

    pub fn knock_accepted(&self, version: &str, via: Via) {
        let labels =
            vec![Label::new("room_version", version.to_owned()), Label::new("via", via.label())];
        self.counter("knockd_knocks_accepted_total", labels).increment(1);
    }

    pub fn knock_refused(&self, version: &str, via: Via, why: Refusal) {
        let labels = vec![
            Label::new("room_version", version.to_owned()),
            Label::new("via", via.label()),
            Label::new("reason", why.label()),
        ];
        self.counter("knockd_knocks_refused_total", labels).increment(1);
    }

    /// A decision by a person through the admin API (`actor_kind` "user"), `waited` after the
    /// knock.
    pub fn decision(&self, action: &str, waited: Duration) {
        let labels =
            vec![Label::new("action", action.to_owned()), Label::new("actor_kind", "user")];
        self.counter("knockd_decisions_total", labels).increment(1);
        self.histogram("knockd_knock_decision_seconds", vec![]).record(waited.as_secs_f64());
    }

    pub fn outbox_failure(&self, destination: &str) {
        let labels = vec![Label::new("destination", destination.to_owned())];
        self.counter("knockd_outbox_failures_total", labels).increment(1);
    }

    pub fn federation_request(&self, endpoint: &str, status: u16, took: Duration) {
        let labels = vec![
            Label::new("endpoint", endpoint.to_owned()),
            Label::new("status", status.to_string()),
        ];
        self.counter("knockd_federation_requests_total", labels).increment(1);
        let labels = vec![Label::new("endpoint", endpoint.to_owned())];
        self.histogram("knockd_federation_request_seconds", labels).record(took.as_secs_f64());
    }

    /// The handle that times waits for a database connection.
    pub fn pool_waits(&self) -> Histogram {
        self.histogram("knockd_db_pool_wait_seconds", vec![])
    }

    pub fn room_batch(&self, events: usize) {
        self.histogram("knockd_room_batch_writes", vec![]).record(events as f64);
    }

    /// Sets the per-room pending-knock gauges: (room, count, oldest age in seconds).
    pub fn set_pending(&self, rooms: &[(String, i64, f64)]) {
        let now: BTreeSet<String> = rooms.iter().map(|r| r.0.clone()).collect();
        let gone = replace(&self.pending_rooms, now);
        for room in gone {
            self.gauge("knockd_pending_knocks", vec![Label::new("room", room.clone())]).set(0.0);
            self.gauge("knockd_oldest_pending_knock_seconds", vec![Label::new("room", room)])
                .set(0.0);
        }
        for (room, count, age) in rooms {
            let label = || vec![Label::new("room", room.clone())];
            self.gauge("knockd_pending_knocks", label()).set(*count as f64);
            self.gauge("knockd_oldest_pending_knock_seconds", label()).set(*age);
        }
    }

    /// Sets the per-destination outbox gauges: (destination, items, oldest age in seconds).
    pub fn set_outbox(&self, destinations: &[(String, i64, f64)]) {
        let now: BTreeSet<String> = destinations.iter().map(|d| d.0.clone()).collect();
        let gone = replace(&self.outbox_destinations, now);
        for dest in gone {
            self.gauge("knockd_outbox_items", vec![Label::new("destination", dest.clone())])
                .set(0.0);
            self.gauge("knockd_outbox_oldest_item_seconds", vec![Label::new("destination", dest)])
                .set(0.0);
        }
        for (dest, items, age) in destinations {
            let label = || vec![Label::new("destination", dest.clone())];
            self.gauge("knockd_outbox_items", label()).set(*items as f64);
            self.gauge("knockd_outbox_oldest_item_seconds", label()).set(*age);
        }
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }

    /// Drains histogram samples into their buckets (also done at each render).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// Stores `now` and returns what was there before but is not in `now`.
fn replace(set: &Mutex<BTreeSet<String>>, now: BTreeSet<String>) -> Vec<String> {
    let Ok(mut held) = set.lock() else { return Vec::new() };
    let gone = held.difference(&now).cloned().collect();
    *held = now;
    gone
}
