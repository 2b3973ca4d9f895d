//! `knockctl approve ID…`: invite the knockers.

use super::{
    Ctx,
    decide::{self, Verb},
};
use crate::{cli::ApproveArgs, exit::CliError};

pub async fn run(ctx: &Ctx, args: &ApproveArgs) -> Result<(), CliError> {
    let Some(ids) = decide::gather_ids(&args.ids.ids)? else {
        return decide::nothing_to_do(ctx);
    };
    decide::decide(ctx, &ids, args.reason.as_deref(), Verb::Approve).await
}
