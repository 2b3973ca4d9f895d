//! What approve and deny share: gathering ids (arguments or stdin), calling the single or bulk
//! endpoint, and reporting per-id results.

use std::io::{IsTerminal, Read};

use knockd_shared::{AdminClient, BulkItem, BulkResponse, ClientError, Decision};

use super::Ctx;
use crate::exit::{CliError, Exit, describe};

/// The decision to take.
#[derive(Clone, Copy, Debug)]
pub enum Verb {
    Approve,
    Deny { ban: bool },
}

impl Verb {
    fn past(self) -> &'static str {
        match self {
            Self::Approve => "approved",
            Self::Deny { ban: false } => "denied",
            Self::Deny { ban: true } => "banned",
        }
    }
}

/// The ids to decide on, from the arguments, with `-` (or no arguments and stdin not a
/// terminal) read from stdin. `None`: ids were read from stdin and there were none.
pub fn gather_ids(args: &[String]) -> Result<Option<Vec<i64>>, CliError> {
    let from_stdin = args.iter().any(|a| a == "-") || args.is_empty();
    if args.is_empty() && std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "no knock ids given (pass ids as arguments, or `-` to read them from stdin)",
        ));
    }
    let stdin = if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::failure(format!("cannot read ids from stdin: {e}")))?;
        text
    } else {
        String::new()
    };
    let mut ids = Vec::new();
    for arg in args {
        if arg == "-" {
            for word in stdin.split_whitespace() {
                push_id(&mut ids, word)?;
            }
        } else {
            push_id(&mut ids, arg)?;
        }
    }
    if args.is_empty() {
        for word in stdin.split_whitespace() {
            push_id(&mut ids, word)?;
        }
    }
    Ok(if ids.is_empty() && from_stdin { None } else { Some(ids) })
}

/// Adds an id once.
fn push_id(ids: &mut Vec<i64>, word: &str) -> Result<(), CliError> {
    let id = word.trim().parse::<i64>().map_err(|_| {
        CliError::usage(format!("not a knock id: {:?}", crate::output::escape(word)))
    })?;
    if !ids.contains(&id) {
        ids.push(id);
    }
    Ok(())
}

/// Nothing to decide: ids came from stdin and there were none (e.g. a filter matched nothing).
pub fn nothing_to_do(ctx: &Ctx) -> Result<(), CliError> {
    ctx.out.note("no knock ids on stdin; nothing to do");
    if ctx.out.json {
        ctx.out.json(&BulkResponse { results: Vec::new() })?;
    }
    Ok(())
}

/// Decides on `ids`: one id through the single endpoint, several through the bulk one.
pub async fn decide(
    ctx: &Ctx,
    ids: &[i64],
    reason: Option<&str>,
    verb: Verb,
) -> Result<(), CliError> {
    let client = ctx.client()?;
    let results = match ids {
        [id] => vec![single(&client, *id, reason, verb).await?],
        _ => {
            match verb {
                Verb::Approve => client.approve_many(ids, reason).await?,
                Verb::Deny { ban } => client.deny_many(ids, reason, ban).await?,
            }
            .results
        }
    };
    report(ctx, verb, results)
}

/// One id through the single endpoint, as a bulk item (API errors become the item's error).
async fn single(
    client: &AdminClient,
    id: i64,
    reason: Option<&str>,
    verb: Verb,
) -> Result<BulkItem, CliError> {
    let result = match verb {
        Verb::Approve => client.approve(id, reason).await,
        Verb::Deny { ban } => client.deny(id, reason, ban).await,
    };
    match result {
        Ok(decision) => Ok(BulkItem { id, decision: Some(decision), error: None }),
        // A 401 is about the token, not this knock.
        Err(e @ ClientError::Api { status: 401, .. }) => Err(e.into()),
        Err(ClientError::Api { body, .. }) => {
            Ok(BulkItem { id, decision: None, error: Some(body) })
        }
        Err(e) => Err(e.into()),
    }
}

/// Prints the results (decisions on stdout, failures on stderr) and picks the exit code.
fn report(ctx: &Ctx, verb: Verb, results: Vec<BulkItem>) -> Result<(), CliError> {
    let total = results.len();
    let response = BulkResponse { results };
    if ctx.out.json {
        ctx.out.json(&response)?;
    }
    let mut failed = Vec::new();
    for item in &response.results {
        match (&item.decision, &item.error) {
            (Some(d), _) if !ctx.out.json => ctx.out.line(&done_line(verb, d))?,
            (Some(_), _) => {}
            (None, error) => {
                let (code, why) = match error {
                    Some(body) => (Exit::for_errcode(&body.errcode), describe(body)),
                    None => (Exit::Failure, "no decision and no error".to_owned()),
                };
                // knockd's messages usually name the knock already ("no knock 7").
                let named = why.contains(&format!("knock {}", item.id));
                let why = if named { why } else { format!("knock {}: {why}", item.id) };
                failed.push((item.id, code, why));
            }
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    if let [(_, code, why)] = failed.as_slice()
        && total == 1
    {
        return Err(CliError::new(*code, why.clone()));
    }
    for (_, _, why) in &failed {
        ctx.out.error(why);
    }
    let ids: Vec<String> = failed.iter().map(|(id, _, _)| id.to_string()).collect();
    Err(CliError::new(
        Exit::combine(failed.iter().map(|(_, code, _)| *code)),
        format!("{} of {total} knocks failed: {}", failed.len(), ids.join(", ")),
    ))
}

fn done_line(verb: Verb, d: &Decision) -> String {
    let user = d.user_id.as_deref().unwrap_or("?");
    crate::output::escape(&format!(
        "{} knock {} ({user} in {})",
        verb.past(),
        d.knock_id,
        d.room_id
    ))
}
