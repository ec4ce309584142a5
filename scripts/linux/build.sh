#!/usr/bin/env bash
# Builds the wfpmon kernel image on Linux:
#     target/x86_64-pc-windows-msvc/release/wfpmon.sys
#
# Usage: scripts/linux/build.sh [extra cargo build arguments]
#
# Runs setup.sh first (it returns in well under a second when everything is in
# place), then `cargo build --release --target x86_64-pc-windows-msvc -p wfpmon`
# with the generated Linux cargo configuration, and copies the linked DLL to
# the .sys name Windows drivers use.
#
# Overrides (environment):
#   WFPMON_WORKSPACE  cargo workspace to build (default: this repository), e.g.
#                     a scratch driver crate used to test the tool chain
#   WFPMON_PACKAGE    package to build (default: wfpmon); the image is named
#                     after its library (dashes become underscores)
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/linux/env.sh
source "$script_dir/env.sh"

log() { printf 'build.sh: %s\n' "$*" >&2; }

"$script_dir/setup.sh"

[[ -f "$WFPMON_WORKSPACE/Cargo.toml" ]] || { log "error: no Cargo.toml in $WFPMON_WORKSPACE"; exit 1; }

# wdk-build finds the workspace by walking up from OUT_DIR to the Cargo.lock,
# so the target directory must stay inside the workspace.
if [[ -n "${CARGO_TARGET_DIR:-}" || -n "${CARGO_BUILD_TARGET_DIR:-}" ]]; then
    log "ignoring CARGO_TARGET_DIR/CARGO_BUILD_TARGET_DIR: wdk-build needs <workspace>/target"
    unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR
fi
# RUSTFLAGS would replace the configured target rustflags (+crt-static and
# the kernel-image link arguments), producing a different, unfit image.
if [[ -n "${RUSTFLAGS:-}" || -n "${CARGO_ENCODED_RUSTFLAGS:-}" ]]; then
    log "ignoring RUSTFLAGS/CARGO_ENCODED_RUSTFLAGS: the generated cargo configuration sets them"
    unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
fi

# cargo discovers configuration from the working directory: run in the
# workspace so its own .cargo/config.toml applies as on Windows.
cd "$WFPMON_WORKSPACE"
# wfpmon builds exactly its committed Cargo.lock (a scratch workspace may
# have none yet).
locked=()
[[ -f "$WFPMON_WORKSPACE/Cargo.lock" ]] && git -C "$WFPMON_WORKSPACE" ls-files --error-unmatch Cargo.lock >/dev/null 2>&1 \
    && locked=(--locked)
cargo build "${locked[@]}" --release --target "$WFPMON_TARGET" -p "$WFPMON_PACKAGE" "$@"

# A cdylib links as <lib>.dll; a kernel driver is installed as <lib>.sys.
out_dir="$WFPMON_WORKSPACE/target/$WFPMON_TARGET/release"
lib_name="${WFPMON_PACKAGE//-/_}"
dll="$out_dir/$lib_name.dll"
sys="$out_dir/$lib_name.sys"
[[ -f "$dll" ]] || { log "error: cargo produced no $dll"; exit 1; }
# Copy only when the image changed (keeps the .sys timestamp meaningful);
# copy to a temporary name first so readers never see a half-written image.
if ! cmp -s "$dll" "$sys"; then
    cp -f "$dll" "$sys.tmp"
    mv -f "$sys.tmp" "$sys"
fi
log "kernel image: $sys"
