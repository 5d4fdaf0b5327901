//! `fleet restart [PORT...] [--all-at-once]`: restart backends, by default
//! one at a time, each drained first and back in rotation before the next.

use crate::cli::RestartArgs;
use crate::control::protocol::Request;
use crate::state_dir::StateDir;

pub(crate) fn run(args: RestartArgs) -> Result<(), super::operate::OperateError> {
    let state = StateDir::new(args.state.resolve());
    super::operate::run(
        &state,
        Request::Restart {
            ports: args.ports,
            all_at_once: args.all_at_once,
        },
        "start one with `fleet up`",
    )
}
