//! knockctl: the admin tool for knockd, as a library so that benchmarks and tests can reach the
//! TUI's pure parts. The binary is `src/main.rs`.
//!
//! The modules: `cli` (the command line), `commands` (one file per verb), `output` (text, JSON,
//! colour), `exit` (exit codes and errors), `sse` (the event-stream parser) and `tui` (the
//! interactive terminal UI).

pub mod cli;
pub mod commands;
pub mod exit;
pub mod output;
pub mod sse;
pub mod tui;
