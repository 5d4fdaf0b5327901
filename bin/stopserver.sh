#!/usr/bin/env bash
# Stop the fleet that bin/runserver.sh started (from the same directory).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fleet="${FLEET:-}"
if [[ -z "$fleet" ]]; then
  if command -v fleet >/dev/null 2>&1; then
    fleet=fleet
  else
    target="${CARGO_TARGET_DIR:-target}"
    [[ "$target" = /* ]] || target="$root/$target"
    fleet="$target/release/fleet"
  fi
fi
exec "$fleet" down "$@"
