#!/usr/bin/env bash
# First README command on Linux: set everything up (idempotent), build the
# real wfpmon.sys, and run its lifecycle in the Speakeasy emulator against
# the fake filter engine, printing the ordered calls of DriverEntry, a few
# flows with the counters the driver reports, and Unload.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/linux/env.sh
source "$here/env.sh"

"$here/build.sh" >&2
exec "$WFPMON_VENV/bin/python" "$WFPMON_REPO_ROOT/tests/emulator/demo.py" \
    "$WFPMON_REPO_ROOT/target/$WFPMON_TARGET/release/wfpmon.sys"
