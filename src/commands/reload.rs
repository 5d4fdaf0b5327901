//! `fleet reload`: the supervisor re-reads the fleet.yaml it was started
//! with (and the flags given to `up`) and applies the difference; a file
//! that does not validate changes nothing and its error is printed.

use crate::cli::ReloadArgs;
use crate::control::protocol::Request;
use crate::state_dir::StateDir;

pub(crate) fn run(args: ReloadArgs) -> Result<(), super::operate::OperateError> {
    let state = StateDir::new(args.state.resolve());
    super::operate::run(&state, Request::Reload, "start one with `fleet up`")
}
