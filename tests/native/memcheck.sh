#!/usr/bin/env bash
# The native host under valgrind memcheck (called by scripts/test.sh):
#
#  1. the stress scenario, and the events scenario (flow events, pending
#     reads completed from classify threads, IoCancelIrp, cleanup, process
#     totals, Unload with reads pending, the ring overflowing), must run
#     clean (any memcheck error fails them: --error-exitcode);
#  2. the deliberately broken scenario (the engine hands the driver a flow
#     context whose flowDeleteFn already freed it) must be *reported*:
#     memcheck's exit code, an invalid read or write of a block that was
#     free'd, at an instruction inside the mapped image.
#
# Usage: tests/native/memcheck.sh path/to/wfpmon-native-stress
# Environment: WFPMON_NATIVE_MEMCHECK_REPEAT (stress repetitions, default 20),
# WFPMON_NATIVE_MEMCHECK_EVENTS_REPEAT (events repetitions, default 2),
# WFPMON_NATIVE_SEED.
set -euo pipefail

bin="${1:?usage: memcheck.sh path/to/wfpmon-native-stress}"
command -v valgrind >/dev/null || { echo "memcheck.sh: valgrind is not installed (scripts/linux/setup.sh installs it)" >&2; exit 1; }
vg=(valgrind --tool=memcheck --error-exitcode=99 --fair-sched=yes)
log_dir="$(mktemp -d)"
trap 'rm -rf "$log_dir"' EXIT

echo "memcheck: stress scenario (must be clean)"
if ! WFPMON_NATIVE_REPEAT="${WFPMON_NATIVE_MEMCHECK_REPEAT:-20}" "${vg[@]}" "$bin" stress >"$log_dir/stress.log" 2>&1; then
    cat "$log_dir/stress.log"
    echo "memcheck: FAILED: the stress scenario is not clean under memcheck" >&2
    exit 1
fi
grep -E "^wfpmon-native-stress|ERROR SUMMARY" "$log_dir/stress.log"

echo "memcheck: events scenario (must be clean)"
if ! WFPMON_NATIVE_REPEAT="${WFPMON_NATIVE_MEMCHECK_EVENTS_REPEAT:-2}" "${vg[@]}" "$bin" events >"$log_dir/events.log" 2>&1; then
    cat "$log_dir/events.log"
    echo "memcheck: FAILED: the events scenario is not clean under memcheck" >&2
    exit 1
fi
grep -E "^wfpmon-native-stress|ERROR SUMMARY" "$log_dir/events.log"

echo "memcheck: deliberately broken scenario (must be reported)"
set +e
WFPMON_NATIVE_PRINT_IMAGE=1 "${vg[@]}" "$bin" use-after-delete >"$log_dir/broken.log" 2>&1
rc=$?
set -e
fail() {
    cat "$log_dir/broken.log"
    echo "memcheck: FAILED: $*" >&2
    exit 1
}
[[ $rc -eq 99 ]] || fail "valgrind exited with $rc, not the error exit code 99"
grep -qE "Invalid (read|write) of size" "$log_dir/broken.log" || fail "no invalid read/write reported"
grep -q "free'd" "$log_dir/broken.log" || fail "the invalid access is not reported as one of a freed block"
# The first invalid access must be executed by the image itself.
read -r base size < <(sed -n 's/^image mapped at \(0x[0-9a-f]*\) size \(0x[0-9a-f]*\)$/\1 \2/p' "$log_dir/broken.log" | head -1)
[[ -n "${base:-}" ]] || fail "the stress binary did not print the image's address"
pc="$(grep -A1 -m1 -E "Invalid (read|write) of size" "$log_dir/broken.log" | sed -n 's/.* at \(0x[0-9A-Fa-f]*\):.*/\1/p')"
[[ -n "$pc" ]] || fail "no faulting address in the report"
if ((pc < base || pc >= base + size)); then
    fail "the invalid access at $pc is not in the image [$base, +$size)"
fi
printf 'memcheck: reported as it must be: %s at image offset %#x\n' \
    "$(grep -m1 -oE "Invalid (read|write) of size [0-9]+" "$log_dir/broken.log")" "$((pc - base))"
