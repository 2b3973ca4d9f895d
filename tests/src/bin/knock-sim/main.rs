//! knock-sim: simulated remote homeservers for demos and load.
//!
//! `knock-sim demo`  knocks a handful of users with human-looking names on a room, accepts the
//!                   invites knockd sends and joins, so a newcomer sees a live queue in knockctl.
//! `knock-sim bench` N distinct users knock on one room: make_knock and signing first (untimed),
//!                   then only the send_knock requests are timed over C concurrent connections.
//! `knock-sim bench-approve` approve → invite received latency.
//! `knock-sim bench-make-knock` make_knock throughput.
//! `knock-sim bench-send` a joined server's `/send` bursts, and send_knock from another server
//!                   alone and during the burst.

mod bench;
mod demo;
mod send;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "knock-sim", version, about = "Simulated remote Matrix homeservers that knock")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args, Clone)]
pub struct Target {
    /// The resident server's name (knockd's default is localhost:8448).
    #[arg(long, default_value = "localhost:8448")]
    pub server: String,
    /// knockd's admin API (to create rooms, approve, and read the room's state).
    #[arg(long, env = "KNOCKCTL_URL", default_value = "http://127.0.0.1:8449")]
    pub admin_url: String,
    /// knockd's admin token file.
    #[arg(long, env = "KNOCKCTL_TOKEN_FILE", default_value = "./knockd-data/admin.token")]
    pub token_file: std::path::PathBuf,
    /// The room to knock on; when absent a knock room is created through the admin API.
    #[arg(long)]
    pub room: Option<String>,
    /// Room version of a created room.
    #[arg(long, default_value = "10")]
    pub room_version: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Knock a handful of people, then accept invites and join, until interrupted.
    Demo {
        #[command(flatten)]
        target: Target,
        /// How many people knock.
        #[arg(long, default_value_t = 6)]
        users: usize,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Time send_knock for N users over C connections.
    Bench {
        #[command(flatten)]
        target: Target,
        #[arg(short = 'n', long, default_value_t = 1000)]
        n: usize,
        #[arg(short = 'c', long, default_value_t = 32)]
        c: usize,
        /// `fresh`: a make_knock per knock; `stale`: every knock from one template (a wide fork).
        #[arg(long, default_value = "fresh")]
        template: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve N knocks one by one and time until each invite reaches this simulated server.
    BenchApprove {
        #[command(flatten)]
        target: Target,
        #[arg(short = 'n', long, default_value_t = 200)]
        n: usize,
        #[arg(long)]
        json: bool,
    },
    /// A joined server's bursts of /send transactions, and send_knock latency from another
    /// server alone and during the burst.
    BenchSend {
        #[command(flatten)]
        target: Target,
        /// Transactions in the burst.
        #[arg(long, default_value_t = 40)]
        txns: usize,
        /// Messages per transaction (the spec's limit is 50).
        #[arg(long, default_value_t = 50)]
        per_txn: usize,
        /// Knocks timed alone, and again during the burst.
        #[arg(long, default_value_t = 100)]
        knocks: usize,
        #[arg(long)]
        json: bool,
    },
    /// Time make_knock over C connections.
    BenchMakeKnock {
        #[command(flatten)]
        target: Target,
        #[arg(short = 'n', long, default_value_t = 5000)]
        n: usize,
        #[arg(short = 'c', long, default_value_t = 32)]
        c: usize,
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    knockd_tests::install_crypto();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { target, users, seconds } => demo::run(target, users, seconds).await,
        Command::Bench { target, n, c, template, json } => {
            bench::send_knock(target, n, c, &template, json).await
        }
        Command::BenchApprove { target, n, json } => bench::approve(target, n, json).await,
        Command::BenchSend { target, txns, per_txn, knocks, json } => {
            send::run(target, txns, per_txn, knocks, json).await
        }
        Command::BenchMakeKnock { target, n, c, json } => {
            bench::make_knock(target, n, c, json).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("knock-sim: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The admin client for a target.
pub fn admin(target: &Target) -> Result<knockd_shared::AdminClient, String> {
    let token = std::fs::read_to_string(&target.token_file)
        .map_err(|e| format!("cannot read the admin token {}: {e}", target.token_file.display()))?;
    Ok(knockd_shared::AdminClient::new(target.admin_url.clone(), token.trim()))
}

/// The target room, created as a knock room when none was given.
pub async fn room(target: &Target, name: &str) -> Result<String, String> {
    if let Some(room) = &target.room {
        return Ok(room.clone());
    }
    let created = admin(target)?
        .create_room(&knockd_shared::CreateRoomRequest {
            room_version: Some(target.room_version.clone()),
            name: Some(name.to_owned()),
            topic: Some("Created by knock-sim".to_owned()),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("creating a room: {e}"))?;
    eprintln!("knock-sim: created room {} (version {})", created.room_id, created.room_version);
    Ok(created.room_id)
}
