#!/usr/bin/env bash
# Second README command on Linux: every test of the project.
#
#  1. set-up (idempotent) and the release image of the driver;
#  2. host crates: cargo test (catalog, flow registry, unload protocol,
#     control protocol incl. property tests, fwpsk-sys layouts, wfpmonctl),
#     and loom model checking of the flow registry's concurrency protocol;
#  3. lints: clippy -D warnings for the host crates, for the driver on its
#     kernel target, and for wfpmonctl on the Windows target (type-check);
#  4. pytest: static checks of the image, the emulator suite on the real
#     wfpmon.sys, the INF checks and the Hyper-V kit checks.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/linux/env.sh
source "$root/scripts/linux/env.sh"
cd "$root"

step() { printf '\n=== %s\n' "$*"; }

step "set-up and release build of wfpmon.sys"
scripts/linux/build.sh

host_crates=(-p wfpmon-core -p fwpsk-sys -p wfpmonctl)

step "host tests (cargo test)"
cargo test "${host_crates[@]}"

step "model checking (loom): the flow registry's stop/insert/remove protocol"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$root/target/loom" \
    cargo test -p wfpmon-core --test loom_registry --release

step "clippy: host crates (all targets)"
cargo clippy "${host_crates[@]}" --all-targets -- -D warnings

step "clippy: driver on x86_64-pc-windows-msvc (kernel image)"
cargo clippy --release --target "$WFPMON_TARGET" -p wfpmon -- -D warnings

step "clippy: wfpmonctl on x86_64-pc-windows-msvc (user mode, type-check)"
cargo clippy --target "$WFPMON_TARGET" -p wfpmonctl -- -D warnings

step "pytest: image, emulator (driver and wfpmonctl.exe), INF, VM kit"
export WFPMON_SYS="$root/target/$WFPMON_TARGET/release/wfpmon.sys"
exec "$WFPMON_VENV/bin/python" -m pytest -q tests/image tests/emulator tests/inf tests/vm \
    tools/wfpmonctl/tests/emulator
