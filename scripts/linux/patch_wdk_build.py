#!/usr/bin/env python3
"""Make a Linux-host copy of wdk-build 0.6.0 (Linux build only).

wdk-build is a *build-dependency*, so it is compiled for the host. Version
0.6.0 has three things that stop it from compiling on a Linux host:

1. an unconditional dependency on the `windows` crate (used only to read the
   "Windows Kits" registry key), which does not build on Linux;
2. `utils::set_var` / `utils::remove_var` bodies that are `compile_error!`
   when the host is not Windows;
3. two calls to `std::os::windows::fs::symlink_file` in `cargo_make.rs`
   without a cfg gate.

This script copies the pristine crate (as unpacked by cargo, checksum-verified
against the crates.io index) to DEST and applies small, anchored edits. Every
edit asserts how many times its anchor occurs, so a different wdk-build
version fails loudly here instead of silently producing a half-patched crate.
The Windows build never sees the result: only the Linux CARGO_HOME generated
by setup.sh points `[patch.crates-io]` at it.

Usage: patch_wdk_build.py SRC_DIR DEST_DIR
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

EXPECTED_VERSION = "0.6.0"


def edit(path: Path, anchor: str, replacement: str, count: int) -> None:
    """Replace `anchor` by `replacement` in `path`; require exactly `count` hits.

    Anchors and replacements are written with "\n"; they are adapted to the
    file's own line endings (the crate's sources use CRLF), which are kept.
    """
    with path.open(encoding="utf-8", newline="") as f:
        text = f.read()
    if "\r\n" in text:
        anchor = anchor.replace("\n", "\r\n")
        replacement = replacement.replace("\n", "\r\n")
    found = text.count(anchor)
    if found != count:
        sys.exit(
            f"patch_wdk_build: expected {count} occurrence(s) of {anchor!r} in "
            f"{path}, found {found}; is this really wdk-build {EXPECTED_VERSION}?"
        )
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write(text.replace(anchor, replacement))


# Helper appended to cargo_make.rs (blocker 3): the same operation through the
# host's own symlink API.
SYMLINK_HELPER = """\
/// Creates a file symlink with the host's API (added by wfpmon's Linux build:
/// the upstream crate calls the Windows-only API directly).
#[cfg(windows)]
fn host_symlink_file(original: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_file(original, link)
}

/// Creates a file symlink with the host's API (added by wfpmon's Linux build:
/// the upstream crate calls the Windows-only API directly).
#[cfg(not(windows))]
fn host_symlink_file(original: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(original, link)
}

"""


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dest = Path(sys.argv[1]), Path(sys.argv[2])

    manifest = (src / "Cargo.toml").read_text(encoding="utf-8")
    if f'\nversion = "{EXPECTED_VERSION}"\n' not in manifest or '\nname = "wdk-build"\n' not in manifest:
        sys.exit(f"patch_wdk_build: {src} is not wdk-build {EXPECTED_VERSION}")

    if dest.exists():
        shutil.rmtree(dest)
    # The registry copy is read-only for cargo's purposes; work on our own copy.
    # `.cargo-ok` and `.cargo_vcs_info.json` are cargo bookkeeping, not source.
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".cargo-ok"))

    # Blocker 1a: `windows` only as a Windows-host dependency. The normalized
    # manifest has one `[dependencies.windows]` table; a target-specific table
    # with the same contents keeps it for Windows hosts.
    edit(
        dest / "Cargo.toml",
        "\n[dependencies.windows]\n",
        "\n[target.'cfg(windows)'.dependencies.windows]\n",
        1,
    )

    utils = dest / "src" / "utils.rs"
    # Blocker 1b: the registry lookup (the only user of `windows`) exists on
    # Windows hosts only. On other hosts WDKContentRoot must come from the
    # environment, which is how the Linux build provides it.
    edit(utils, "\nuse windows::{", "\n#[cfg(windows)]\nuse windows::{", 1)
    edit(
        utils,
        "\nfn read_registry_key_string_value(",
        "\n#[cfg(windows)]\nfn read_registry_key_string_value(",
        1,
    )
    edit(
        utils,
        "\n    if let Some(path) = read_registry_key_string_value(",
        "\n    #[cfg(windows)]\n    if let Some(path) = read_registry_key_string_value(",
        2,
    )
    # `CStr` is imported for the registry code only: keep non-Windows builds
    # free of unused-import warnings (this copy is a path dependency, so its
    # warnings would be shown on every rebuild).
    edit(
        utils,
        "\nuse std::{\n",
        "\n#[cfg_attr(not(windows), allow(unused_imports))]\nuse std::{\n",
        1,
    )

    # Blocker 2: make the Windows implementations of set_var/remove_var the
    # only ones and drop the compile_error! stubs. On a Linux host,
    # `env::set_var` is sound as long as no other thread reads the
    # environment; wdk-build calls these helpers only from the cargo-make
    # entry points, which run them before spawning anything.
    edit(
        utils,
        '\n#[cfg(target_os = "windows")]\npub fn set_var<',
        "\npub fn set_var<",
        1,
    )
    edit(
        utils,
        '\n#[cfg(target_os = "windows")]\npub fn remove_var<',
        "\npub fn remove_var<",
        1,
    )
    # `cfg(any())` is never true: the stubs are compiled out.
    edit(
        utils,
        '\n#[cfg(not(target_os = "windows"))]\npub fn set_var<',
        "\n#[cfg(any())]\npub fn set_var<",
        1,
    )
    edit(
        utils,
        '\n#[cfg(not(target_os = "windows"))]\npub fn remove_var<',
        "\n#[cfg(any())]\npub fn remove_var<",
        1,
    )

    # Blocker 3: route both symlink calls through a host-specific helper.
    cargo_make = dest / "src" / "cargo_make.rs"
    edit(cargo_make, "std::os::windows::fs::symlink_file(", "host_symlink_file(", 2)
    edit(cargo_make, "\n#[cfg(test)]\n", "\n" + SYMLINK_HELPER + "#[cfg(test)]\n", 1)

    # Mark the copy so nobody mistakes it for the upstream crate.
    (dest / "WFPMON-LINUX-PATCHED.txt").write_text(
        "Generated by scripts/linux/patch_wdk_build.py from the crates.io\n"
        f"wdk-build {EXPECTED_VERSION}: host-portability edits for the Linux build.\n"
        "Do not edit; rerun scripts/linux/setup.sh instead.\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
