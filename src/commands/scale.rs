//! `fleet scale N`: grow onto the next consecutive ports or shrink from the
//! top (drained first); the balancer switches to the new set at once.

use crate::cli::ScaleArgs;
use crate::control::protocol::Request;
use crate::state_dir::StateDir;

pub(crate) fn run(args: ScaleArgs) -> Result<(), super::operate::OperateError> {
    let state = StateDir::new(args.state.resolve());
    super::operate::run(
        &state,
        Request::Scale {
            backends: args.backends,
        },
        "start one with `fleet up --backends N`",
    )
}
