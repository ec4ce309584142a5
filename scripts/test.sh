#!/usr/bin/env bash
# Second README command on Linux: every test of the project.
#
#  1. set-up (idempotent) and the release image of the driver;
#  2. host crates: cargo test (catalog, flow registry, unload protocol,
#     control protocol incl. property tests, fwpsk-sys layouts, wfpmonctl),
#     and loom model checking of the flow registry's concurrency protocol;
#  3. lints: clippy -D warnings for the host crates (wfpmon-export
#     included), for the driver on its kernel target, and for wfpmonctl
#     and wfpmon-export with their tests on the Windows target (type-check);
#  4. pytest: static checks of the image, the emulator suite on the real
#     wfpmon.sys, the INF checks, the Hyper-V kit checks, and the rulebook
#     check (every rule of docs/engine-rules.md cited by the fake hosts'
#     models and by a test), and the docs check (README.md and docs/*.md:
#     relative links and anchors resolve, the README stays short);
#  5. the native host (tests/native): the real wfpmon.sys loaded into a
#     Linux process and driven from real threads (scenarios repeated with
#     consecutive seeds; the exporter against real nfcapd/nfdump and
#     promtool), then under valgrind memcheck (a stress scenario
#     that must be clean, and a deliberately broken one that must be
#     reported); and wfpmonctl top, the tool's live view, in tmux against
#     the real wfpmon.sys with traffic running (screens asserted and printed).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/linux/env.sh
source "$root/scripts/linux/env.sh"
cd "$root"

# Everything is also written to target/test-output.log; the last line is a
# summary over every runner ("N passed, N failed, N skipped"), also kept in
# target/test-summary.txt for .ci/run to repeat after cargo-make's own lines.
mkdir -p "$root/target"
output_log="$root/target/test-output.log"
summary_file="$root/target/test-summary.txt"
rm -f "$summary_file"
exec > >(tee "$output_log") 2>&1

# Each step prints its name, and when the next one begins (or the run
# ends), how long it took; the summary lists every step's time (the
# per-suite times of docs/testing.md come from these lines).
run_start=$(date +%s)
step_name=""
step_start=$run_start
step_times=()
step_done() {
    [[ -n $step_name ]] || return 0
    local took=$(($(date +%s) - step_start))
    printf '=== %s: %d s\n' "$step_name" "$took"
    step_times+=("$(printf '%5d s  %s' "$took" "$step_name")")
    step_name=""
}
step() {
    step_done
    step_name="$*"
    step_start=$(date +%s)
    printf '\n=== %s\n' "$*"
}

step "set-up and release build of wfpmon.sys"
scripts/linux/build.sh

host_crates=(-p wfpmon-core -p fwpsk-sys -p wfpmonctl -p wfpmon-export)

step "formatting (cargo fmt --check)"
cargo fmt --all -- --check

step "host tests (cargo test)"
cargo test --locked "${host_crates[@]}"

step "model checking (loom): the flow registry's stop/insert/remove protocol"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$root/target/loom" \
    cargo test --locked -p wfpmon-core --test loom_registry --release

step "clippy: host crates (all targets)"
cargo clippy --locked "${host_crates[@]}" --all-targets -- -D warnings

step "clippy: native host (all targets)"
cargo clippy --locked -p wfpmon-native-host --all-targets -- -D warnings

step "clippy: driver on x86_64-pc-windows-msvc (kernel image)"
cargo clippy --locked --release --target "$WFPMON_TARGET" -p wfpmon -- -D warnings

step "clippy: wfpmonctl and wfpmon-export on x86_64-pc-windows-msvc (user mode and their tests, type-check)"
cargo clippy --locked --target "$WFPMON_TARGET" -p wfpmonctl -p wfpmon-export --all-targets -- -D warnings

step "pytest: image, emulator (driver, wfpmonctl.exe, wfpmon-export.exe), INF, VM kit, rulebook, docs"
export WFPMON_SYS="$root/target/$WFPMON_TARGET/release/wfpmon.sys"
pytest_suites=(tests/image tests/emulator tests/inf tests/vm tools/wfpmonctl/tests/emulator
    tools/wfpmon-export/tests/emulator tests/rules tests/docs)
junit="$root/target/pytest-junit.xml"
# On every core (pytest-xdist): each test is an emulation of its own, with
# no state shared between tests, so they are handed out one at a time.
"$WFPMON_VENV/bin/python" -m pytest -q -n "$(nproc)" --dist load --junit-xml="$junit" "${pytest_suites[@]}"
# The time of each suite of that one run: the sum of its tests' times
# (set-up, call and tear-down; collection is in the step's total only).
"$WFPMON_VENV/bin/python" - "$junit" "${pytest_suites[@]}" <<'PY'
import sys
import xml.etree.ElementTree as ET

junit, suites = sys.argv[1], sys.argv[2:]
seconds = dict.fromkeys(suites, 0.0)
for case in ET.parse(junit).iter("testcase"):
    path = case.get("classname", "").replace(".", "/")
    suite = next((s for s in suites if path.startswith(s + "/")), None)
    if suite is not None:
        seconds[suite] += float(case.get("time", 0))
for suite in suites:
    print(f"=== pytest suite {suite}: {seconds[suite]:.0f} s")
PY

step "native host: the real wfpmon.sys on real threads (tests/native)"
# The tests skip (loudly) without an image; here the image was just built,
# so a missing one is an error, not a skip.
[[ -f "$WFPMON_SYS" ]] || { echo "test.sh: no image at $WFPMON_SYS" >&2; exit 1; }
# The exporter's tests (export_collectors) need nfcapd, nfdump and promtool,
# which set-up installs: here a missing one fails them instead of skipping.
WFPMON_REQUIRE_COLLECTORS=1 cargo test --locked --release -p wfpmon-native-host -- --skip top_in_tmux

step "native host: wfpmonctl top in tmux against the real wfpmon.sys (screens printed)"
command -v tmux >/dev/null || { echo "test.sh: tmux is missing (scripts/linux/setup.sh installs it)" >&2; exit 1; }
cargo test --locked --release -p wfpmon-native-host --test top_tmux -- --nocapture

step "native host under valgrind memcheck"
cargo build --locked --release -p wfpmon-native-host --bin wfpmon-native-stress
tests/native/memcheck.sh "$root/target/release/wfpmon-native-stress"

step_done
printf '\n=== step times (total %d s)\n' "$(($(date +%s) - run_start))"
printf '%s\n' "${step_times[@]}"

step "summary"
# cargo test: "test result: ok. 9 passed; 0 failed; 1 ignored; ..."
# pytest:     "240 passed, 1 skipped in 87.30s"
awk '
    /^test result: / { p += $4; f += $6; s += $8 }
    /^[0-9]+ passed/ && / in [0-9.]+s/ {
        for (i = 1; i < NF; i++) {
            n = $i + 0; w = $(i + 1); sub(/,$/, "", w)
            if (w == "passed") p += n; else if (w == "failed") f += n; else if (w == "skipped") s += n
        }
    }
    END { printf "%d passed, %d failed, %d skipped\n", p, f, s }
' "$output_log" | tee "$summary_file"
