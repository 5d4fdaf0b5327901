//! `fleet upgrade`: the running supervisor hands the fleet to a new
//! supervisor process of the fleet binary (see `supervisor::handover`); a
//! new binary that does not start or take over changes nothing.

use crate::cli::UpgradeArgs;
use crate::control::protocol::Request;
use crate::state_dir::StateDir;

pub(crate) fn run(args: UpgradeArgs) -> Result<(), super::operate::OperateError> {
    let state = StateDir::new(args.state.resolve());
    // The supervisor runs elsewhere: a relative path means from here.
    let exe = args.exe.map(|p| std::path::absolute(&p).unwrap_or(p));
    super::operate::run(
        &state,
        Request::Upgrade { exe },
        "start one with `fleet up`",
    )
}
