//! knockctl: the admin tool for knockd (grows with the admin API).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use knockd_shared::{ADMIN_TOKEN_FILE, AdminClient, CreateRoomRequest, DEFAULT_ADMIN_URL};

#[derive(Debug, Parser)]
#[command(name = "knockctl", version, about = "Moderate knocks on rooms hosted by knockd")]
struct Cli {
    /// knockd admin API URL.
    #[arg(long, env = "KNOCKCTL_URL", default_value = DEFAULT_ADMIN_URL, global = true)]
    url: String,
    /// File holding the admin token (default: <data dir>/admin.token).
    #[arg(long, env = "KNOCKCTL_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// knockd's data directory, to find admin.token.
    #[arg(long, env = "KNOCKD_DATA_DIR", default_value = "./knockd-data", global = true)]
    data_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Rooms hosted by knockd.
    Rooms {
        #[command(subcommand)]
        command: RoomsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum RoomsCommand {
    /// List rooms.
    List,
    /// Show one room with its current state.
    Show { room_id: String },
    /// Create a knock-gated room.
    Create {
        /// Room version (7–12).
        #[arg(long = "version", default_value = "10")]
        room_version: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        topic: Option<String>,
        /// knock, knock_restricted, invite or public.
        #[arg(long, default_value = "knock")]
        join_rule: String,
        /// Canonical alias on knockd's server (#name:server).
        #[arg(long)]
        alias: Option<String>,
    },
}

fn token(cli: &Cli) -> Result<String, String> {
    if let Ok(t) = std::env::var("KNOCKCTL_TOKEN") {
        return Ok(t);
    }
    let path = cli.token_file.clone().unwrap_or_else(|| cli.data_dir.join(ADMIN_TOKEN_FILE));
    std::fs::read_to_string(&path).map(|t| t.trim().to_owned()).map_err(|e| {
        format!(
            "cannot read the admin token from {}: {e} (use --token-file or KNOCKCTL_TOKEN)",
            path.display()
        )
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let token = match token(&cli) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("knockctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = AdminClient::new(cli.url.clone(), token);
    let result = match &cli.command {
        Command::Rooms { command: RoomsCommand::List } => client
            .list_rooms(None, None)
            .await
            .map(|l| serde_json::to_value(l.rooms).unwrap_or_default()),
        Command::Rooms { command: RoomsCommand::Show { room_id } } => {
            client.room(room_id).await.map(|r| serde_json::to_value(r).unwrap_or_default())
        }
        Command::Rooms {
            command: RoomsCommand::Create { room_version, name, topic, join_rule, alias },
        } => client
            .create_room(&CreateRoomRequest {
                room_version: Some(room_version.clone()),
                name: name.clone(),
                topic: topic.clone(),
                join_rule: Some(join_rule.clone()),
                alias: alias.clone(),
                ..CreateRoomRequest::default()
            })
            .await
            .map(|r| serde_json::to_value(r).unwrap_or_default()),
    };
    match result {
        Ok(value) => {
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
            } else {
                print_text(&value);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("knockctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_text(value: &serde_json::Value) {
    match value {
        serde_json::Value::Array(items) => {
            for item in items {
                let id = item.get("room_id").and_then(|v| v.as_str()).unwrap_or("?");
                let version = item.get("room_version").and_then(|v| v.as_str()).unwrap_or("?");
                let name = item.get("name").and_then(|v| v.as_str()).unwrap_or("");
                let rule = item.get("join_rule").and_then(|v| v.as_str()).unwrap_or("");
                println!("{id}\tv{version}\t{rule}\t{name}");
            }
        }
        other => println!("{}", serde_json::to_string_pretty(other).unwrap_or_default()),
    }
}
