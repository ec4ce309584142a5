#!/usr/bin/env bash
# Prepares a Debian 12 x86_64 machine to build the wfpmon kernel image
# (x86_64-pc-windows-msvc) without Windows, MSVC or the WDK.
#
# Idempotent and cheap to rerun: every step checks whether its result is
# already there (and built from the same inputs) before doing anything, so a
# second run takes well under a second. Everything it generates lives under
# target/linux-wdk/ (see env.sh); nothing outside the repository is written
# except Debian packages, the rustup targets and cargo-make.
#
# Steps:
#   1. Debian packages (apt-get update only when something is missing)
#   2. the Rust targets x86_64-pc-windows-msvc (driver) and -gnu (wfpmonctl.exe
#      for the user-mode emulator test)
#   3. a WDK-shaped directory made from mingw-w64's DDK headers and import
#      libraries (the WDKContentRoot that wdk-build/wdk-sys read)
#   4. a Linux-host copy of wdk-build 0.6.0 and the generated CARGO_HOME whose
#      config.toml wires it, the linker and the environment in
#   5. the Python virtual environment of the tests (tests/requirements.txt)
#   6. cargo-make (skipped when `cargo make --version` answers)
#
# Environment: WFPMON_SETUP_SKIP_VENV=1 skips step 5 (build-only machines).
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/linux/env.sh
source "$script_dir/env.sh"

log() { printf 'setup.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Fingerprint of a step's inputs: when it changes, the step is redone from
# scratch (no partial updates of generated trees).
fingerprint() { printf '%s\n' "$@" | sha256sum | cut -d' ' -f1; }
file_hash() { sha256sum "$1" | cut -d' ' -f1; }

# Writes stdin to FILE only when the content differs, so that unchanged
# generated files keep their timestamps (nothing downstream rebuilds).
write_if_changed() {
    local file="$1" tmp
    tmp="$(mktemp "$file.XXXXXX")"
    cat >"$tmp"
    if [[ -f "$file" ]] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$file"
    fi
}

mkdir -p "$WFPMON_LINUX_DIR"
# One setup at a time: build.sh runs setup.sh on every build, and two builds
# (or a build and a test run) may start together.
exec 9>"$WFPMON_LINUX_DIR/.setup.lock"
flock 9

# ---------------------------------------------------------------------------
# 1. Debian packages
#   mingw-w64-x86-64-dev  DDK headers (include/ddk) and GNU import libraries
#   clang, libclang-dev   libclang for bindgen (wdk-sys) and clang's resource
#                         directory (intrinsic headers such as mmintrin.h)
#   llvm                  llvm-nm and llvm-dlltool to make MSVC import libraries
#   python3-venv          the tests' virtual environment
#   gcc-mingw-w64-x86-64  linker for the x86_64-pc-windows-gnu build of
#                         wfpmonctl.exe that the user-mode emulator test runs
#                         (no MSVC CRT exists here to link the msvc build)
#   valgrind              memcheck run of the native host (tests/native);
#                         skipped when `valgrind --version` already answers
#   tmux                  the terminal `wfpmonctl top` runs in against the
#                         real image (tests/native/tests/top_tmux.rs)
#   nfdump                nfcapd (IPFIX collector) and nfdump (reads its
#                         files) for the exporter's tests (tools/wfpmon-export)
#   prometheus            promtool, which checks the exporter's metrics files
# ---------------------------------------------------------------------------
apt_packages=(mingw-w64-x86-64-dev clang libclang-dev llvm python3-venv gcc-mingw-w64-x86-64 tmux
    nfdump prometheus)
missing=()
for pkg in "${apt_packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if ! valgrind --version >/dev/null 2>&1; then
    missing+=(valgrind)
fi
if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    sudo=()
    if ((EUID != 0)); then sudo=(sudo); fi
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi

command -v cargo >/dev/null || die "cargo not found (install Rust with rustup first)"
command -v rustup >/dev/null || die "rustup not found (the msvc target is added with rustup)"

# libclang and clang's resource directory must be the same LLVM version.
clang_major="$(clang -dumpversion | cut -d. -f1)"
libclang_dir="/usr/lib/llvm-$clang_major/lib"
[[ -e "$libclang_dir/libclang.so" || -n "$(compgen -G "$libclang_dir/libclang.so.*")" ]] \
    || die "libclang for clang $clang_major not found in $libclang_dir"
clang_resource_dir="$(clang -print-resource-dir)"
[[ -f "$clang_resource_dir/include/mmintrin.h" ]] || die "clang resource directory $clang_resource_dir lacks its headers"

mingw_root="/usr/x86_64-w64-mingw32"
[[ -f "$mingw_root/include/ddk/ntddk.h" && -f "$mingw_root/lib/libntoskrnl.a" ]] \
    || die "mingw-w64-x86-64-dev does not provide $mingw_root/include/ddk/ntddk.h and lib/libntoskrnl.a"

# ---------------------------------------------------------------------------
# 2. Rust target (the prebuilt core/alloc suffice: no -Zbuild-std)
# ---------------------------------------------------------------------------
# x86_64-pc-windows-msvc: the driver (and wfpmonctl's type-check);
# x86_64-pc-windows-gnu: the wfpmonctl.exe the user-mode emulator test runs.
installed_targets="$(cd "$WFPMON_WORKSPACE" && rustup target list --installed)"
for target in "$WFPMON_TARGET" x86_64-pc-windows-gnu; do
    if ! grep -qx "$target" <<<"$installed_targets"; then
        log "adding Rust target $target"
        (cd "$WFPMON_WORKSPACE" && rustup target add "$target") \
            || die "rustup could not add $target (it downloads from the Rust distribution server, not a package registry); install the target on this machine first"
    fi
done

# ---------------------------------------------------------------------------
# 3. WDK-shaped directory (WDKContentRoot):
#   Include/<ver>/km       mingw's ddk/*.h (symlinks) + the overlay header
#   Include/<ver>/km/crt   empty: must exist, clang's own headers serve the CRT part
#   Include/<ver>/shared   mingw's include directory
#   Lib/<ver>/km/x64       ntoskrnl.lib, hal.lib, wmilib.lib (MSVC-style import
#                          libraries made with llvm-dlltool) and an empty
#                          BufferOverflowFastFailK.lib (wdk-build links it;
#                          Rust code needs nothing from it)
# ---------------------------------------------------------------------------
overlay_src="$script_dir/wdk-overlay/wfpmon_linux_overlay.h"
mingw_version="$(dpkg-query -W -f='${Version}' mingw-w64-x86-64-dev)"
llvm_version="$(llvm-dlltool --version 2>/dev/null | head -n 3 | tr '\n' ' ' || true)"
# Bump when the layout or the generation below changes (hashing this whole
# script instead would regenerate, and so rebuild wdk-sys, on any edit).
wdk_layout_version=2
wdk_fp="$(fingerprint "$wdk_layout_version" "$(file_hash "$overlay_src")" \
    "$mingw_version" "$llvm_version" "$WFPMON_WDK_VERSION")"
wdk_stamp="$WFPMON_WDK_ROOT/.wfpmon-stamp"

# Writes a module-definition file for an import library from a mingw GNU import
# library: every `__imp_X` is an export; X is code when the archive also
# defines the thunk `X`, data otherwise. Extra exports can be appended.
make_def() {
    local archive="$1" dll="$2"
    shift 2
    {
        printf 'LIBRARY %s\nEXPORTS\n' "$dll"
        {
            llvm-nm --defined-only --format=posix "$archive" 2>/dev/null \
                | awk '
                    $2 == "T" { code[$1] = 1 }
                    $2 == "I" && $1 ~ /^__imp_/ { imp[substr($1, 7)] = 1 }
                    END {
                        for (name in imp) {
                            if (name ~ /^_head_|_iname$/) continue
                            print name (name in code ? "" : " DATA")
                        }
                    }'
            for extra in "$@"; do printf '%s\n' "$extra"; done
        } | sort -u | sed 's/^/    /'
    }
}

if [[ ! -f "$wdk_stamp" || "$(cat "$wdk_stamp")" != "$wdk_fp" ]]; then
    log "generating the WDK-shaped directory $WFPMON_WDK_ROOT"
    tmp_wdk="$WFPMON_LINUX_DIR/wdk.tmp"
    rm -rf "$tmp_wdk"
    inc="$tmp_wdk/Include/$WFPMON_WDK_VERSION"
    lib="$tmp_wdk/Lib/$WFPMON_WDK_VERSION/km/x64"
    mkdir -p "$inc/km/crt" "$lib"
    for header in "$mingw_root"/include/ddk/*.h; do
        ln -s "$(readlink -f "$header")" "$inc/km/$(basename "$header")"
    done
    # -p keeps the timestamp: bindgen reruns only when the header really changed.
    cp -p "$overlay_src" "$inc/km/"
    ln -s "$(readlink -f "$mingw_root/include")" "$inc/shared"

    # Real ntoskrnl exports that mingw 10's libntoskrnl.a lacks: the pool
    # API the overlay header declares, and EtwSetInformation (Windows 10+),
    # which the tracelogging crate declares itself.
    overlay_exports=(ExAllocatePool2 ExAllocatePool3 EtwSetInformation)
    make_def "$mingw_root/lib/libntoskrnl.a" ntoskrnl.exe "${overlay_exports[@]}" >"$lib/ntoskrnl.def"
    make_def "$mingw_root/lib/libhal.a" hal.dll >"$lib/hal.def"
    make_def "$mingw_root/lib/libwmilib.a" wmilib.sys >"$lib/wmilib.def"
    for name in ntoskrnl hal wmilib; do
        llvm-dlltool -m i386:x86-64 -d "$lib/$name.def" -l "$lib/$name.lib"
    done
    # An archive with no members: lld-link accepts it and finds nothing in it.
    printf '!<arch>\n' >"$lib/BufferOverflowFastFailK.lib"

    printf '%s\n' "$wdk_fp" >"$tmp_wdk/.wfpmon-stamp"
    rm -rf "$WFPMON_WDK_ROOT"
    mv "$tmp_wdk" "$WFPMON_WDK_ROOT"
fi

# ---------------------------------------------------------------------------
# 4. Generated CARGO_HOME and the Linux-host copy of wdk-build
# ---------------------------------------------------------------------------
mkdir -p "$CARGO_HOME"
cargo_config="$CARGO_HOME/config.toml"
patched_wdk_build="$WFPMON_LINUX_DIR/wdk-build"
overlay_header="$WFPMON_WDK_ROOT/Include/$WFPMON_WDK_VERSION/km/$(basename "$overlay_src")"

# TOML basic strings: escape backslashes and double quotes.
toml_str() { local s="${1//\\/\\\\}"; printf '"%s"' "${s//\"/\\\"}"; }

# Clang arguments for bindgen (wdk-sys), for the msvc target only:
# - the resource directory of the clang matching libclang (mmintrin.h & co.);
# - pretend to be GCC/mingw, not MSVC: mingw's _MSC_VER code paths do not
#   parse with clang, while its GCC paths do. The *target* stays
#   x86_64-pc-windows-msvc, so type layouts and calling conventions are MSVC's;
# - __SCE__ keeps clang 14 from pulling in AMX intrinsic headers that bindgen
#   lays out wrongly;
# - the overlay header, force-included before wdk-sys' own includes.
bindgen_args="-resource-dir=$clang_resource_dir -U_MSC_VER -D__GNUC__=12 -D__GNUC_MINOR__=2 -D__GNUC_PATCHLEVEL__=0 -D__MINGW32__ -D__MINGW64__ -D__SCE__ -include $overlay_header"

# Link arguments of the kernel image (lld-link syntax), Linux build only:
# - /STACK: the emulator's stack is SizeOfStackCommit; the real kernel ignores it;
# - /RELEASE: write the PE checksum (a kernel image needs a valid one);
# - /MERGE:.retplne=.rdata: lld-link emits a `.retplne` section with no
#   characteristics, which Windows refuses to load (error 998);
# - /SECTION:...,P: code and data non-pageable, like the WDK's images
#   (IMAGE_SCN_MEM_NOT_PAGED); a driver that wants pageable code uses PAGE*
#   sections explicitly.
link_args=(
    "/STACK:0x40000,0x6000"
    "/RELEASE"
    "/MERGE:.retplne=.rdata"
    "/SECTION:.text,ERP"
    "/SECTION:.rdata,RP"
    "/SECTION:.data,RWP"
    "/SECTION:.pdata,RP"
)

render_config() {
    local with_patch="$1" arg
    cat <<EOF
# Generated by scripts/linux/setup.sh for wfpmon's Linux build. Do not edit:
# rerun setup.sh. Read through CARGO_HOME (exported by scripts/linux/env.sh),
# so every cargo process of the Linux build sees it, including the
# \`cargo metadata\` that wdk-build runs inside build scripts.

EOF
    if [[ "$with_patch" == yes ]]; then
        cat <<EOF
# wdk-build is a build-dependency (compiled for the host); 0.6.0 does not
# compile on Linux. This copy is patched by scripts/linux/patch_wdk_build.py.
# A path override, not [patch.crates-io]: a [patch] entry rewrites
# Cargo.lock (the patched wdk-build loses its registry source and checksum),
# so the committed, Windows-resolved lock file could not be used with
# --locked. The override swaps the source only, and cargo warns once per
# command that the copy declares its \`windows\` dependency for Windows hosts
# only (that is the whole point of the patch).
paths = [$(toml_str "$patched_wdk_build")]

EOF
    fi
    cat <<EOF
[target.$WFPMON_TARGET]
# rust-lld ships with rustup's toolchain and links PE images as lld-link.
linker = "rust-lld"
# Target rustflags replace [build] rustflags, so +crt-static (required by
# wdk-build) is repeated here.
rustflags = [
    "-C", "target-feature=+crt-static",
EOF
    for arg in "${link_args[@]}"; do
        printf '    "-C", %s,\n' "$(toml_str "link-arg=$arg")"
    done
    cat <<EOF
]

[env]
# The WDK-shaped directory made from mingw-w64 (read by wdk-build).
WDKContentRoot = { value = $(toml_str "$WFPMON_WDK_ROOT"), force = true }
# libclang of the same LLVM version as the resource directory below.
LIBCLANG_PATH = { value = $(toml_str "$libclang_dir"), force = true }
# bindgen's extra clang arguments, for the msvc target only.
BINDGEN_EXTRA_CLANG_ARGS_${WFPMON_TARGET//-/_} = { value = $(toml_str "$bindgen_args"), force = true }
EOF
}

wdk_build_fp="$(fingerprint "$(file_hash "$script_dir/patch_wdk_build.py")")"
wdk_build_stamp="$patched_wdk_build/.wfpmon-stamp"
if [[ ! -f "$wdk_build_stamp" || "$(cat "$wdk_build_stamp")" != "$wdk_build_fp" ]]; then
    log "making the Linux-host copy of wdk-build 0.6.0"
    # The pristine crate comes from crates.io through cargo itself (checksum
    # verified against the index). While it is fetched, the configuration
    # must not patch wdk-build, or cargo would resolve to the patched copy.
    render_config no | write_if_changed "$cargo_config"
    fetch_dir="$WFPMON_LINUX_DIR/fetch-wdk-build"
    mkdir -p "$fetch_dir"
    cat >"$fetch_dir/Cargo.toml" <<'EOF'
# Generated by scripts/linux/setup.sh: only used to let cargo download
# wdk-build 0.6.0. The empty [workspace] keeps it out of the wfpmon workspace.
[package]
name = "wfpmon-fetch-wdk-build"
version = "0.0.0"
edition = "2021"
publish = false

[lib]
path = "lib.rs"

[dependencies]
wdk-build = "=0.6.0"

[workspace]
EOF
    : >"$fetch_dir/lib.rs"
    pristine="$(cargo metadata --format-version 1 --manifest-path "$fetch_dir/Cargo.toml" \
        | python3 -c '
import json, sys
packages = json.load(sys.stdin)["packages"]
[pkg] = [p for p in packages if p["name"] == "wdk-build" and p["version"] == "0.6.0"
         and (p.get("source") or "").startswith("registry+")]
print(pkg["manifest_path"].rsplit("/", 1)[0])')"
    rm -rf "$patched_wdk_build.tmp"
    python3 "$script_dir/patch_wdk_build.py" "$pristine" "$patched_wdk_build.tmp"
    printf '%s\n' "$wdk_build_fp" >"$patched_wdk_build.tmp/.wfpmon-stamp"
    rm -rf "$patched_wdk_build"
    mv "$patched_wdk_build.tmp" "$patched_wdk_build"
fi
render_config yes | write_if_changed "$cargo_config"

# ---------------------------------------------------------------------------
# 5. Python virtual environment of the tests
# ---------------------------------------------------------------------------
if [[ "${WFPMON_SETUP_SKIP_VENV:-0}" != 1 ]]; then
    requirements="$WFPMON_REPO_ROOT/tests/requirements.txt"
    venv_fp="$(fingerprint "$(file_hash "$requirements")" "$(python3 -c 'import sys; print(sys.version)')")"
    venv_stamp="$WFPMON_VENV/.wfpmon-stamp"
    if [[ ! -f "$venv_stamp" || "$(cat "$venv_stamp")" != "$venv_fp" ]]; then
        log "creating the test virtual environment $WFPMON_VENV"
        rm -rf "$WFPMON_VENV"
        python3 -m venv "$WFPMON_VENV"
        "$WFPMON_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
        printf '%s\n' "$venv_fp" >"$venv_stamp"
    fi
fi

# ---------------------------------------------------------------------------
# 6. cargo-make: the task runner of the Windows flow (wdk-build) and of the
#    Linux tasks (`cargo make linux-test` is the test command CI runs).
#    Installed once per machine into the user's own cargo home, not into
#    target/ (a `cargo clean` would otherwise cost a 4-minute rebuild).
# ---------------------------------------------------------------------------
if ! cargo make --version >/dev/null 2>&1; then
    log "installing cargo-make (about 4 minutes of compilation, once per machine)"
    # --force: cargo may still list it as installed when only the binary is gone.
    CARGO_HOME="${WFPMON_ORIG_CARGO_HOME:-$HOME/.cargo}" cargo install cargo-make --locked --force --version 0.37.24
fi
