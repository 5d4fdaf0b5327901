//! `fleet stop PORT...`: drain and stop backends; they stay stopped (out of
//! rotation, not restarted by the policy) until `fleet start`.

use crate::cli::StopArgs;
use crate::control::protocol::Request;
use crate::state_dir::StateDir;

pub(crate) fn run(args: StopArgs) -> Result<(), super::operate::OperateError> {
    let state = StateDir::new(args.state.resolve());
    super::operate::run(
        &state,
        Request::Stop { ports: args.ports },
        "nothing to stop",
    )
}
