//! The command line, declared with clap's derive API.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use knockd_shared::DEFAULT_ADMIN_URL;

use crate::exit::EXIT_CODES_HELP;

/// Knock statuses `list --status` accepts (`all` means every status).
pub const STATUSES: [&str; 11] = [
    "pending",
    "delivery_pending",
    "approved",
    "approve_failed",
    "denied",
    "banned",
    "rescinded",
    "joined",
    "expired",
    "replaced",
    "all",
];

/// Join rules knockd's rooms can have.
const JOIN_RULES: [&str; 4] = ["knock", "knock_restricted", "invite", "public"];

const LONG_ABOUT: &str = "\
Moderate knocks on rooms hosted by knockd, through knockd's admin API.

Without a command, on a terminal, knockctl opens an interactive queue (also `knockctl tui`;
press ? there for its keys).

Data goes to stdout, messages to stderr; every command takes --json for a stable, scriptable
schema (the admin API's own objects). knockctl talks to --url (default http://127.0.0.1:8449)
with the admin token read from --token-file if given, else from the KNOCKCTL_TOKEN environment
variable, else from admin.token in the data directory (--data-dir, default ./knockd-data).

Example: approve every pending knock delivered by good.example:
  knockctl list --json | jq -r '.[] | select(.origin_server==\"good.example\") | .id' \\
    | xargs knockctl approve";

/// knockctl's command line.
#[derive(Debug, Parser)]
#[command(
    name = "knockctl",
    version,
    about = "Moderate knocks on rooms hosted by knockd",
    long_about = LONG_ABOUT,
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// Connection and output settings, accepted before or after the subcommand.
    #[command(flatten)]
    pub global: Global,
    /// What to do (none: the interactive TUI on a terminal, else this help).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// knockd admin API URL.
    #[arg(long, env = "KNOCKCTL_URL", default_value = DEFAULT_ADMIN_URL, global = true)]
    pub url: String,
    /// File holding the admin token [default: <data dir>/admin.token, or $KNOCKCTL_TOKEN].
    #[arg(long, env = "KNOCKCTL_TOKEN_FILE", value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// knockd's data directory, where admin.token is found.
    #[arg(
        long,
        env = "KNOCKD_DATA_DIR",
        value_name = "DIR",
        default_value = "./knockd-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Print JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Colour text output: auto (a terminal and no NO_COLOR), always or never.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ColorMode::Auto, global = true)]
    pub color: ColorMode,
}

/// `--color`
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorMode {
    Auto,
    Always,
    Never,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List knocks in the moderation queue (pending ones unless --status says otherwise).
    List(ListArgs),
    /// Show one knock: the knocker, the reason, decisions and history.
    Show {
        /// Knock id.
        id: i64,
    },
    /// Approve knocks: knockd invites the knockers.
    Approve(ApproveArgs),
    /// Deny knocks: knockd kicks the knockers, or bans them with --ban.
    Deny(DenyArgs),
    /// Rooms hosted by knockd.
    #[command(subcommand)]
    Rooms(RoomsCommand),
    /// The decision log, newest first.
    Log(LogArgs),
    /// The outbound federation queue: items pending and items parked after failing too long;
    /// `retry ID` puts a parked item back in the queue, `drop ID` deletes it.
    Outbox {
        #[command(subcommand)]
        action: Option<OutboxCommand>,
    },
    /// Stream queue changes as JSON lines (one event per line) until interrupted.
    Watch,
    /// The interactive terminal UI (also what knockctl without a command opens on a terminal).
    Tui,
    /// knockctl's version and the version of the knockd it talks to.
    Version,
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print knockctl's man page (roff) on stdout.
    Man {
        /// Write a page per command into this directory instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// `list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only knocks on this room (room ID).
    #[arg(long, value_name = "ROOM_ID")]
    pub room: Option<String>,
    /// Only knocks delivered by this server.
    #[arg(long, value_name = "SERVER")]
    pub server: Option<String>,
    /// Only knocks by this user.
    #[arg(long, value_name = "USER_ID")]
    pub user: Option<String>,
    /// Knock status, or all.
    #[arg(long, default_value = "pending", value_parser = STATUSES)]
    pub status: String,
    /// At most this many knocks, oldest first (0: all of them).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: usize,
}

/// Knock ids of approve and deny.
#[derive(Debug, Args)]
pub struct Ids {
    /// Knock ids; `-` (or none, with stdin not a terminal) reads whitespace-separated ids from
    /// stdin.
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
}

/// `approve`
#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub ids: Ids,
    /// Reason shown to the knocker in the invite.
    #[arg(long)]
    pub reason: Option<String>,
}

/// `deny`
#[derive(Debug, Args)]
pub struct DenyArgs {
    #[command(flatten)]
    pub ids: Ids,
    /// Reason put in the kick or ban event.
    #[arg(long)]
    pub reason: Option<String>,
    /// Ban instead of kick: the user cannot knock again.
    #[arg(long)]
    pub ban: bool,
    /// Do not ask before denying several knocks (required when not on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `log`
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only decisions in this room (room ID).
    #[arg(long, value_name = "ROOM_ID")]
    pub room: Option<String>,
    /// Only decisions by this local user.
    #[arg(long, value_name = "USER_ID")]
    pub actor: Option<String>,
    /// Only this kind of decision.
    #[arg(long, value_parser = ["approve", "deny", "ban"])]
    pub action: Option<String>,
    /// Only decisions on this knock.
    #[arg(long, value_name = "ID")]
    pub knock: Option<i64>,
    /// At most this many decisions (0: all of them).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: usize,
}

/// `outbox …`
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Put a parked item back in the queue; its server is tried at once.
    Retry {
        /// Item ID (from `knockctl outbox`).
        id: i64,
    },
    /// Delete a parked item; a dropped invite ends its approval as approve_failed.
    Drop {
        /// Item ID (from `knockctl outbox`).
        id: i64,
    },
}

/// `rooms …`
#[derive(Debug, Subcommand)]
pub enum RoomsCommand {
    /// List the rooms knockd hosts.
    List,
    /// Show a room's settings and current state.
    Show {
        /// Room ID.
        room_id: String,
    },
    /// Create a knock-gated room.
    Create(CreateArgs),
    /// Change a room's settings (flags not given stay as they are).
    Set {
        /// Room ID.
        room_id: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Make a local user a member of a room.
    AddMember {
        /// Room ID.
        room_id: String,
        /// A user of knockd's server.
        user_id: String,
        /// Power level to give.
        #[arg(long, allow_negative_numbers = true, value_name = "N")]
        power_level: Option<i64>,
    },
    /// Remove a local user from a room.
    RemoveMember {
        /// Room ID.
        room_id: String,
        /// The user to remove.
        user_id: String,
    },
    /// Set a user's power level in a room.
    Power {
        /// Room ID.
        room_id: String,
        /// The user.
        user_id: String,
        /// The new power level.
        #[arg(allow_negative_numbers = true)]
        level: i64,
    },
}

/// `rooms create`
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Room version (7 to 12).
    #[arg(long = "version", default_value = "10", value_name = "V")]
    pub room_version: String,
    /// History visibility [default: shared].
    #[arg(long, value_parser = ["invited", "joined", "shared", "world_readable"])]
    pub history_visibility: Option<String>,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// Room settings shared by `rooms create` and `rooms set`.
#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// Room name.
    #[arg(long)]
    pub name: Option<String>,
    /// Room topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Canonical alias on knockd's server (#name:server).
    #[arg(long)]
    pub alias: Option<String>,
    /// Join rule [create's default: knock].
    #[arg(long, value_parser = JOIN_RULES)]
    pub join_rule: Option<String>,
    /// Rooms whose members may join a knock_restricted room directly.
    #[arg(long, value_name = "ROOM_ID", num_args = 1..)]
    pub allow: Vec<String>,
    /// Avatar (mxc:// URL).
    #[arg(long, value_name = "MXC_URL")]
    pub avatar_url: Option<String>,
    /// List the room in the public room directory (true) or take it out (false).
    #[arg(long, value_name = "BOOL")]
    pub published: Option<bool>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
