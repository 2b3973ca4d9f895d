//! Diesel table definitions, written by hand to match both migration trees.

diesel::table! {
    rooms (room_id) {
        room_id -> Text,
        room_version -> Text,
        creator -> Text,
        created_ms -> BigInt,
        is_public -> Bool,
        current_group -> Nullable<BigInt>,
        version -> BigInt,
    }
}

diesel::table! {
    events (stream_ordering) {
        stream_ordering -> BigInt,
        event_id -> Text,
        room_id -> Text,
        event_type -> Text,
        state_key -> Nullable<Text>,
        sender -> Text,
        origin_server_ts -> BigInt,
        depth -> BigInt,
        status -> Text,
        state_before -> Nullable<BigInt>,
        state_after -> Nullable<BigInt>,
        pdu -> Text,
    }
}

diesel::table! {
    forward_extremities (room_id, event_id) {
        room_id -> Text,
        event_id -> Text,
        depth -> BigInt,
    }
}

diesel::table! {
    state_chains (chain_id) {
        chain_id -> BigInt,
        room_id -> Text,
        base_group -> Nullable<BigInt>,
        tip_pos -> BigInt,
    }
}

diesel::table! {
    state_groups (group_id) {
        group_id -> BigInt,
        room_id -> Text,
        chain_id -> BigInt,
        chain_pos -> BigInt,
        parent_group -> Nullable<BigInt>,
        ancestry -> Nullable<Text>,
    }
}

diesel::table! {
    state_merges (room_id, merged) {
        room_id -> Text,
        merged -> Text,
        group_id -> BigInt,
    }
}

diesel::table! {
    state_deltas (chain_id, event_type, state_key, chain_pos) {
        chain_id -> BigInt,
        event_type -> Text,
        state_key -> Text,
        chain_pos -> BigInt,
        group_id -> BigInt,
        event_id -> Text,
    }
}

diesel::table! {
    current_state (room_id, event_type, state_key) {
        room_id -> Text,
        event_type -> Text,
        state_key -> Text,
        event_id -> Text,
        membership -> Nullable<Text>,
    }
}

diesel::table! {
    local_users (user_id) {
        user_id -> Text,
        display_name -> Nullable<Text>,
        avatar_url -> Nullable<Text>,
        created_ms -> BigInt,
    }
}

diesel::table! {
    admin_tokens (token_id) {
        token_id -> Text,
        token_hash -> Text,
        user_id -> Text,
        label -> Nullable<Text>,
        created_ms -> BigInt,
        revoked_ms -> Nullable<BigInt>,
        expires_ms -> Nullable<BigInt>,
    }
}

diesel::table! {
    server_keys (server_name, key_id) {
        server_name -> Text,
        key_id -> Text,
        verify_key -> Text,
        valid_until_ms -> BigInt,
        expired_ms -> Nullable<BigInt>,
        fetched_ms -> BigInt,
    }
}

diesel::table! {
    knocks (knock_id) {
        knock_id -> BigInt,
        room_id -> Text,
        user_id -> Text,
        event_id -> Text,
        origin_server -> Text,
        status -> Text,
        reason -> Nullable<Text>,
        display_name -> Nullable<Text>,
        avatar_url -> Nullable<Text>,
        content_redacted -> Bool,
        knock_room_state -> Text,
        received_ms -> BigInt,
        updated_ms -> BigInt,
    }
}

diesel::table! {
    decisions (decision_id) {
        decision_id -> BigInt,
        knock_id -> BigInt,
        room_id -> Text,
        actor -> Text,
        action -> Text,
        reason -> Nullable<Text>,
        decided_ms -> BigInt,
        event_id -> Nullable<Text>,
        delivery -> Text,
        delivery_error -> Nullable<Text>,
    }
}

diesel::table! {
    outbox_destinations (destination) {
        destination -> Text,
        lease_owner -> Nullable<Text>,
        lease_until_ms -> BigInt,
        next_attempt_ms -> BigInt,
        backoff_ms -> BigInt,
        failing_since_ms -> Nullable<BigInt>,
        txn_id -> Nullable<Text>,
        txn_body -> Nullable<Text>,
        last_error -> Nullable<Text>,
        lease_gen -> BigInt,
        txn_refusals -> BigInt,
    }
}

diesel::table! {
    outbox (item_id) {
        item_id -> BigInt,
        destination -> Text,
        kind -> Text,
        payload -> Text,
        created_ms -> BigInt,
        txn_id -> Nullable<Text>,
        parked_ms -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
        room_id -> Nullable<Text>,
    }
}

diesel::table! {
    inbound_txns (origin, txn_id) {
        origin -> Text,
        txn_id -> Text,
        response -> Text,
        received_ms -> BigInt,
    }
}

diesel::table! {
    room_servers (room_id, server_name) {
        room_id -> Text,
        server_name -> Text,
        joined -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    room_servers,
    inbound_txns,
    rooms,
    events,
    forward_extremities,
    state_chains,
    state_groups,
    state_merges,
    state_deltas,
    current_state,
    local_users,
    admin_tokens,
    server_keys,
    knocks,
    decisions,
    outbox,
    outbox_destinations,
);
