//! Tests of the TUI: key sequences against the pure state, and snapshots of every screen.

mod answers;
mod fixtures;
mod snapshots;
mod state;
