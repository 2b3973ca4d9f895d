//! Authorization rules, from ruma: which state an event cites and whether it is allowed.

use ruma::{
    EventId,
    events::StateEventType,
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

/// Checks an event against its own auth events (state-independent rules).
pub fn check_against_auth_events(
    rules: &AuthorizationRules,
    pdu: &Pdu,
    fetch_event: impl Fn(&EventId) -> Option<Pdu>,
) -> Result<(), String> {
    check_state_independent_auth_rules(rules, pdu, fetch_event)
}

/// Checks an event against a room state (state-dependent rules).
pub fn check_against_state(
    rules: &AuthorizationRules,
    pdu: &Pdu,
    fetch_state: impl Fn(&StateEventType, &str) -> Option<Pdu>,
) -> Result<(), String> {
    check_state_dependent_auth_rules(rules, pdu, fetch_state)
}
