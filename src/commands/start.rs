//! `fleet start [PORT...]`: start backends stopped by `fleet stop` (or
//! `failed` ones). Starting a whole fleet is `fleet up`, and it says so.

use crate::cli::StartArgs;
use crate::control::protocol::Request;
use crate::state_dir::StateDir;

pub(crate) fn run(args: StartArgs) -> Result<(), super::operate::OperateError> {
    let state = StateDir::new(args.state.resolve());
    super::operate::run(
        &state,
        Request::Start { ports: args.ports },
        "`fleet start` starts stopped backends of a running fleet; to start a fleet, use `fleet up`",
    )
}
