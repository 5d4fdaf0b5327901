#!/usr/bin/env bash
# Drop-in for the lab's runserver.sh: four servers on ports 9002-9005, plus
# the round-robin balancer on 127.0.0.1:44444, supervised by fleet in the
# background. Stop them with `fleet down` (or bin/stopserver.sh).
# Extra arguments go to `fleet up` (e.g. --www DIR, --listen 0.0.0.0:44444).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fleet="${FLEET:-}"
if [[ -z "$fleet" ]]; then
  if command -v fleet >/dev/null 2>&1; then
    fleet=fleet
  else
    (cd "$root" && cargo build --release --quiet)
    fleet="$root/target/release/fleet"
  fi
fi
exec "$fleet" up --detach --backends 4 --base-port 9002 "$@"
