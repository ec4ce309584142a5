# shellcheck shell=bash
# Environment of wfpmon's Linux build. Source it, do not execute it:
#
#     source scripts/linux/env.sh
#
# setup.sh, build.sh and the image tests source it; a developer can source it
# in an interactive shell and then run any cargo command (cargo clippy
# --target x86_64-pc-windows-msvc -p wfpmon, cargo test, ...) with the same
# configuration the build uses. It changes no shell options and runs nothing
# slow, so sourcing it twice is harmless.
#
# Everything it points at is generated under target/linux-wdk/ by setup.sh
# (a fresh clone or `git clean -xdf` has none of it). The Windows build never
# reads any of this.

_wfpmon_env_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# The repository that holds these scripts; generated files live in its target/.
WFPMON_REPO_ROOT="$(cd "$_wfpmon_env_dir/../.." && pwd)"
export WFPMON_REPO_ROOT
export WFPMON_LINUX_DIR="$WFPMON_REPO_ROOT/target/linux-wdk"

# The Rust target of a Windows x64 kernel image.
export WFPMON_TARGET="x86_64-pc-windows-msvc"

# WDKContentRoot substitute (mingw-w64 headers and import libraries laid out
# like a WDK) and the SDK version directory name wdk-build looks for.
export WFPMON_WDK_ROOT="$WFPMON_LINUX_DIR/wdk"
export WFPMON_WDK_VERSION="10.0.22621.0"

# Python virtual environment of the image and emulator tests.
export WFPMON_VENV="$WFPMON_LINUX_DIR/venv"

# The cargo workspace and package that build.sh builds. Overridable so the
# tool chain can be exercised on another crate (e.g. a scratch driver):
#   WFPMON_WORKSPACE=/tmp/scratch-driver scripts/linux/build.sh
export WFPMON_WORKSPACE="${WFPMON_WORKSPACE:-$WFPMON_REPO_ROOT}"
export WFPMON_PACKAGE="${WFPMON_PACKAGE:-wfpmon}"
# build.sh writes $WFPMON_WORKSPACE/target/$WFPMON_TARGET/release/<lib>.sys;
# the tests read WFPMON_SYS (default: this repository's wfpmon.sys). It is
# deliberately not derived here, where a value exported by an earlier
# `source` would go stale when WFPMON_WORKSPACE changes.

# The Linux cargo configuration ([patch.crates-io] wdk-build, linker, rustflags,
# [env]) lives in a generated CARGO_HOME, not in the committed
# .cargo/config.toml: cargo reads $CARGO_HOME/config.toml for every
# invocation that inherits this variable, including the `cargo metadata` that
# wdk-build runs from inside build scripts, which a `cargo --config` flag
# would not reach. rustup's proxies (cargo, rustc) stay where rustup installed
# them: remember that bin directory and keep it on PATH.
_wfpmon_cargo_home="$WFPMON_LINUX_DIR/cargo-home"
if [[ "${CARGO_HOME:-}" != "$_wfpmon_cargo_home" ]]; then
    export WFPMON_ORIG_CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
fi
export CARGO_HOME="$_wfpmon_cargo_home"
if [[ -d "${WFPMON_ORIG_CARGO_HOME:-}/bin" && ":$PATH:" != *":$WFPMON_ORIG_CARGO_HOME/bin:"* ]]; then
    export PATH="$WFPMON_ORIG_CARGO_HOME/bin:$PATH"
fi

unset _wfpmon_env_dir _wfpmon_cargo_home
