//! Authorization rules, from ruma: which state an event cites and whether it is allowed.

use std::collections::HashMap;

use ruma::{
    EventId, OwnedEventId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::AuthorizationRules,
    state_res::{
        auth_types_for_event, check_state_dependent_auth_rules, check_state_independent_auth_rules,
    },
};

use super::{event::EventTemplate, pdu::Pdu};

/// The `(type, state_key)` pairs a new event must cite in `auth_events`.
pub fn auth_types(
    template: &EventTemplate,
    rules: &AuthorizationRules,
) -> Result<Vec<(StateEventType, String)>, String> {
    let content = serde_json::value::to_raw_value(&template.content).map_err(|e| e.to_string())?;
    auth_types_for_event(
        &template.event_type.as_str().into(),
        &template.sender,
        template.state_key.as_deref(),
        &content,
        rules,
    )
}

/// Checks an event against its own auth events (the spec's step 4 of the checks on receipt):
/// the list itself (ruma's state-independent rules), then every rule against the state those
/// events make up. The second half matters: a restricted join must cite its authoriser's
/// membership, a kick its sender's, a message its sender's join, whoever built the event and
/// whatever the state before it says (a gap's state comes from the sender). In v12 rooms the
/// create event is never cited; `fetch_event` must still find it by its ID (the room ID's).
pub fn check_against_auth_events(
    rules: &AuthorizationRules,
    pdu: &Pdu,
    fetch_event: impl Fn(&EventId) -> Option<Pdu>,
) -> Result<(), String> {
    check_state_independent_auth_rules(rules, pdu, &fetch_event)?;
    if pdu.event_type == TimelineEventType::RoomCreate {
        return Ok(());
    }
    let mut ids: Vec<OwnedEventId> = pdu.auth_events.clone();
    if rules.room_create_event_id_as_room_id
        && let Some(room_id) = &pdu.room_id
        && let Ok(create) = EventId::parse(format!("${}", &room_id.as_str()[1..]))
    {
        ids.push(create);
    }
    let state: HashMap<(StateEventType, String), Pdu> = ids
        .iter()
        .filter_map(|id| fetch_event(id))
        .filter_map(|p| Some(((p.event_type.to_string().into(), p.state_key.clone()?), p)))
        .collect();
    check_state_dependent_auth_rules(rules, pdu, |t, k| {
        state.get(&(t.clone(), k.to_owned())).cloned()
    })
}

/// Checks an event against a room state (state-dependent rules).
pub fn check_against_state(
    rules: &AuthorizationRules,
    pdu: &Pdu,
    fetch_state: impl Fn(&StateEventType, &str) -> Option<Pdu>,
) -> Result<(), String> {
    check_state_dependent_auth_rules(rules, pdu, fetch_state)
}
