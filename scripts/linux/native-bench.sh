#!/usr/bin/env bash
# Native benchmarks of the real wfpmon.sys (tests/native): builds the image,
# then prints each figure beside a same-path baseline measured in the same
# run. A command, not a test: nothing here passes or fails on a figure.
#
#     scripts/linux/native-bench.sh          (or: cargo make native-bench)
#
# Environment: WFPMON_NATIVE_BENCH_SCALE (iteration multiplier, default 1),
# WFPMON_NATIVE_BENCH_UNLOAD_FLOWS / WFPMON_NATIVE_BENCH_LIST_FLOWS
# (comma-separated flow counts).
set -euo pipefail
script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/linux/env.sh
source "$script_dir/env.sh"
"$script_dir/build.sh" >&2
cd "$WFPMON_REPO_ROOT"
cargo run --locked --release -p wfpmon-native-host --bin wfpmon-native-bench -- "$@"
