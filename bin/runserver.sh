#!/usr/bin/env bash
# Drop-in for the lab's runserver.sh: four servers on ports 9002-9005, plus
# the round-robin balancer on 127.0.0.1:44444, supervised by fleet in the
# background. Stop them with `fleet down` (or bin/stopserver.sh).
# Extra arguments go to `fleet up` and win over these defaults
# (e.g. --backends 2, --www DIR, --listen 0.0.0.0:44444).
# Uses `fleet` from $FLEET, else from PATH, else builds it (release; honours
# CARGO_TARGET_DIR).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fleet="${FLEET:-}"
if [[ -z "$fleet" ]]; then
  if command -v fleet >/dev/null 2>&1; then
    fleet=fleet
  else
    (cd "$root" && cargo build --release --quiet)
    # Cargo resolves a relative CARGO_TARGET_DIR against where it ran: $root.
    target="${CARGO_TARGET_DIR:-target}"
    [[ "$target" = /* ]] || target="$root/$target"
    fleet="$target/release/fleet"
  fi
fi
# The lab's layout, unless the caller chose otherwise (clap refuses a flag
# given twice, so a default is added only when the flag is absent).
defaults=()
has() { local a; for a in "${@:2}"; do [[ "$a" = "$1" || "$a" = "$1="* ]] && return 0; done; return 1; }
has --backends "$@" || defaults+=(--backends 4)
has --base-port "$@" || defaults+=(--base-port 9002)
exec "$fleet" up --detach "${defaults[@]}" "$@"
