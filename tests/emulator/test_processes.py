"""Process attribution and per-process totals of the real wfpmon.sys
(IOCTL_WFPMON_LIST_PROCESSES): processes interned by (process id, image
path), fields the engine did not supply flagged rather than invented, long
paths keeping their end, totals of active and ended flows that are exact
even while flows end during a query, paging, and the documented eviction
rule of the fixed table."""

import pytest

import protocol as P
import wfp_layout as L
from client import (all_events, all_processes, establish, flow_args, flows_by_id, ioctl, list_processes,
                    processes_by_identity, stats)
from conftest import FakeEngine

SECOND = 10_000_000
EDGE = "\\device\\harddiskvolume3\\program files (x86)\\microsoft\\edge\\application\\msedge.exe"
CURL = "\\device\\harddiskvolume3\\windows\\system32\\curl.exe"
MASK64 = (1 << 64) - 1


def traffic_of(e, handle, family, protocol, seed):
    """Sends some traffic on a flow; returns (bytes in, bytes out, packets
    in, packets out) as the driver counts it."""
    if protocol == 6:
        sent, received = [100 + seed, 7 * seed + 1], [1000 + seed]
        for n in sent:
            e.stream(handle, n, send=True)
        for n in received:
            e.stream(handle, n, send=False)
        return (sum(received), sum(sent), len(received), len(sent))
    e.datagram(handle, [20 + seed, 30], inbound=True)
    e.datagram(handle, [8 + 40 + seed], inbound=False, header_size=8)
    return (50 + seed, 40 + seed, 2, 1)


def as_tuple(t):
    return (t["bytes_inbound"], t["bytes_outbound"], t["packets_inbound"], t["packets_outbound"])


def add(*ts):
    return tuple(sum(x) for x in zip(*ts)) if ts else (0, 0, 0, 0)


def test_per_process_totals_are_the_sum_of_their_flows_across_flows_ending(loaded):
    """Two processes with several flows each (TCP and UDP, both families):
    a process's active totals are the sum of its active flows' counters,
    its ended totals the sum of its ended flows' final counters, and the
    two together never change when flows end; the sum over processes is
    the driver's statistics; first/last seen follow the clock."""
    e = loaded
    e.advance_clock(10 * SECOND)
    flows = {0x11: (4, 6, 10, EDGE), 0x12: (6, 17, 10, EDGE), 0x13: (6, 6, 10, EDGE),
             0x21: (4, 17, 20, CURL), 0x22: (4, 6, 20, CURL)}
    started = {}
    for handle, (family, protocol, pid, path) in flows.items():
        establish(e, handle, family=family, protocol=protocol, pid=pid, path=path)
        started[handle] = e.clock
        e.advance_clock(SECOND)
    counted = {h: traffic_of(e, h, f[0], f[1], h) for h, f in flows.items()}
    ended = set()

    def check():
        procs = processes_by_identity(e)
        assert set(procs) == {(10, EDGE), (20, CURL)}
        for (pid, path), p in procs.items():
            mine = [h for h, f in flows.items() if f[2] == pid]
            active = add(*[counted[h] for h in mine if h not in ended])
            gone = add(*[counted[h] for h in mine if h in ended])
            assert (as_tuple(p["active"]), as_tuple(p["ended"])) == (active, gone), (pid, p)
            assert p["active_flows"] == len([h for h in mine if h not in ended])
            assert p["flows_total"] == len(mine)
            assert p["first_seen"] == started[mine[0]]
            assert (p["flags"], p["path_units"], p["reserved"], p["path_tail_zero"]) == (0, len(path), 0, True)
        s = stats(e, live=True)
        total = add(*[add(as_tuple(p["active"]), as_tuple(p["ended"])) for p in procs.values()])
        assert total == (s["bytes_inbound"], s["bytes_outbound"], s["packets_inbound"], s["packets_outbound"])
        # The walk-free statistics: the ended flows' traffic, as the
        # processes' ended totals add up.
        cheap = stats(e)
        ended_total = add(*[as_tuple(p["ended"]) for p in procs.values()])
        assert ended_total == (cheap["bytes_inbound"], cheap["bytes_outbound"],
                               cheap["packets_inbound"], cheap["packets_outbound"])
        return procs

    before = check()
    for handle in (0x12, 0x21, 0x11):
        e.advance_clock(SECOND)
        e.end_flow(handle)
        ended.add(handle)
        procs = check()
        pid = flows[handle][2]
        assert procs[(pid, flows[handle][3])]["last_seen"] == e.clock
    # More traffic on a live flow shows at once.
    e.stream(0x13, 5, send=True)
    counted[0x13] = add(counted[0x13], (0, 5, 0, 1))
    check()
    # The keys do not change while the processes live.
    assert {k: p["key"] for k, p in check().items()} == {k: p["key"] for k, p in before.items()}
    for handle in (0x13, 0x22):
        e.end_flow(handle)
        ended.add(handle)
    procs = check()
    assert all(p["active_flows"] == 0 and as_tuple(p["active"]) == (0, 0, 0, 0) for p in procs.values())
    e.unload()
    assert e.pool_errors == [] and e.irp_errors() == []


def test_processes_are_interned_and_keys_agree_everywhere(loaded):
    """Forty flows of one (pid, path) make one entry; the flows list, the
    events and LIST_PROCESSES carry the same process key (generation << 32
    | slot); another path under the same pid (a reused process id) is
    another process."""
    e = loaded
    e.churn([flow_args(0x400 + i, pid=4242, path=EDGE) for i in range(40)], end=False)
    establish(e, 0x500, pid=4242, path=CURL)
    procs = processes_by_identity(e)
    assert set(procs) == {(4242, EDGE), (4242, CURL)}
    edge, curl = procs[(4242, EDGE)], procs[(4242, CURL)]
    assert (edge["flows_total"], edge["active_flows"], curl["flows_total"]) == (40, 40, 1)
    assert edge["key"] != curl["key"]
    for p in (edge, curl):
        assert p["key"] >> 32 >= 1 and (p["key"] & 0xFFFFFFFF) < P.PROCESS_SLOTS
    listed = flows_by_id(e)
    assert {listed[0x400 + i]["process_key"] for i in range(40)} == {edge["key"]}
    assert listed[0x500]["process_key"] == curl["key"]
    assert all(listed[h]["process_id"] == 4242 for h in listed)
    events, _, _ = all_events(e)
    assert {ev["process_key"] for ev in events if ev["flow_id"] != 0x500} == {edge["key"]}
    assert [ev["process_key"] for ev in events if ev["flow_id"] == 0x500] == [curl["key"]]
    (header,) = [list_processes(e)]
    assert (header["capacity"], header["evictions"], header["unattributed"], header["reserved"]) == \
        (P.PROCESS_SLOTS, 0, 0, 0)


@pytest.mark.parametrize("pid,path,flags", [
    (300, None, P.PROCESS_PATH_MISSING),
    (None, CURL, P.PROCESS_ID_MISSING),
    (None, None, P.PROCESS_ID_MISSING | P.PROCESS_PATH_MISSING),
    (0, CURL, 0),  # a process id of 0 that the engine did supply is not "missing"
    (301, b"", P.PROCESS_PATH_MISSING),  # an empty blob
    (302, b"\0\0", P.PROCESS_PATH_MISSING),  # a blob holding only the NUL
    # processId is a UINT64 in the metadata, but Windows process ids are
    # 32-bit: a larger value is not truncated into someone else's id.
    ((1 << 32) + 5, CURL, P.PROCESS_ID_MISSING),
])
def test_fields_the_engine_did_not_supply_are_flagged_not_invented(loaded, pid, path, flags):
    e = loaded
    establish(e, 0x600, pid=pid, path=path)
    establish(e, 0x601, pid=pid, path=path)
    ((ident, p),) = processes_by_identity(e).items()
    assert p["flags"] == flags
    reported_pid = 0 if pid is None or pid >= 1 << 32 else pid
    assert p["process_id"] == reported_pid
    expected_path = path if isinstance(path, str) else ""
    assert (p["path"], p["path_units"]) == (expected_path, len(expected_path))
    assert (p["flows_total"], p["active_flows"]) == (2, 2), "interned"
    events, _, _ = all_events(e)
    assert [(ev["process_id"], ev["process_key"], ev["flags"]) for ev in events] == [(reported_pid, p["key"], 0)] * 2
    assert {f["process_key"] for f in flows_by_id(e).values()} == {p["key"]}


def test_a_missing_field_is_another_identity(loaded):
    """The same pid with and without a path, and the same path with and
    without a pid, are four processes — a missing field never matches a
    supplied one."""
    e = loaded
    for handle, (pid, path) in enumerate([(55, CURL), (55, None), (None, CURL), (None, None)]):
        establish(e, 0x700 + handle, pid=pid, path=path)
    assert set(processes_by_identity(e)) == {(55, CURL), (55, None), (None, CURL), (None, None)}


def test_a_path_without_its_nul_is_the_same_process(loaded):
    """The engine's blob counts the terminating NUL; the driver trims it, so
    a blob without one names the same process."""
    e = loaded
    establish(e, 0x801, pid=9, path=EDGE)
    establish(e, 0x802, pid=9, path=EDGE.encode("utf-16-le"))
    ((ident, p),) = processes_by_identity(e).items()
    assert ident == (9, EDGE) and p["flows_total"] == 2


def long_path(units, volume="3"):
    """A path of `units` UTF-16 units on volume `volume` (which appears
    only in its first 24 units)."""
    head, tail = f"\\device\\harddiskvolume{volume}\\", "\\tools\\build\\very-long-tool-name.exe"
    return head + "d" * (units - len(head) - len(tail)) + tail


def test_long_paths_keep_their_end(loaded):
    """A path longer than 256 UTF-16 units keeps its last 256 (the file name
    identifies a program) and is flagged TRUNCATED; one of exactly 256 is
    kept whole; two long paths that differ only before their last 256
    units are still two processes (the identity hashes the whole path)."""
    e = loaded
    exact, long_a, long_b = long_path(256), long_path(300, "3"), long_path(300, "4")
    assert len(exact) == 256 and len(long_a) == len(long_b) == 300 and long_a[-256:] == long_b[-256:]
    for handle, path in enumerate((exact, long_a, long_b, long_a)):
        establish(e, 0x900 + handle, pid=77, path=path)
    procs = all_processes(e)[0]
    by_total = sorted(procs, key=lambda p: p["flows_total"])
    assert len(procs) == 3
    whole = [p for p in procs if p["path"] == exact]
    assert len(whole) == 1 and whole[0]["flags"] == 0 and whole[0]["path_units"] == 256
    truncated = [p for p in procs if p["flags"] & P.PROCESS_PATH_TRUNCATED]
    assert len(truncated) == 2
    for p in truncated:
        assert (p["path"], p["path_units"], p["flags"]) == (long_a[-256:], 256, P.PROCESS_PATH_TRUNCATED)
    assert sorted(p["flows_total"] for p in truncated) == [1, 2]
    assert by_total[-1]["flows_total"] == 2


def test_paging_with_next_slot(loaded):
    """Seventy processes: a page holds at most 64 (or what the buffer holds,
    or max_entries), with PROCESS_LIST_MORE and the slot to continue from;
    every process is listed exactly once, in slot order."""
    e = loaded
    e.churn([flow_args(0xA00 + i, pid=9000 + i, path=CURL) for i in range(70)], end=False)
    first = list_processes(e)
    assert (first["returned"], first["more"]) == (64, True)
    second = list_processes(e, cursor_slot=first["next_slot"])
    assert (second["returned"], second["more"], second["next_slot"]) == (6, False, 0)
    keys = [p["key"] for p in first["processes"] + second["processes"]]
    slots = [k & 0xFFFFFFFF for k in keys]
    assert slots == sorted(slots) and len(set(keys)) == 70
    assert all(s >= first["next_slot"] for s in slots[64:]) and all(s < first["next_slot"] for s in slots[:64])
    assert {p["process_id"] for p in first["processes"] + second["processes"]} == set(range(9000, 9070))
    # max_entries, and a buffer with room for three and a half entries.
    processes, pages = all_processes(e, batch=10)
    # MORE means "more slots follow": the page that took the last process
    # cannot know it was the last; the next page is empty and final.
    assert [pg["returned"] for pg in pages] == [10] * 7 + [0] and [p["key"] for p in processes] == keys
    assert [pg["more"] for pg in pages] == [True] * 7 + [False]
    status, info, raw = ioctl(e, P.IOCTL_LIST_PROCESSES, P.list_processes_request(),
                              P.list_processes_out_len(3) + P.PROCESS_ENTRY_SIZE // 2)
    page = P.parse_processes(raw)
    assert (status, info, page["returned"], page["more"]) == (0, P.list_processes_out_len(3), 3, True)
    assert [p["key"] for p in page["processes"]] == keys[:3]
    # Continuing from the last slot lists only what is at or after it.
    tail = list_processes(e, cursor_slot=slots[-1])
    assert [p["key"] for p in tail["processes"]] == [keys[-1]] and not tail["more"]


# Where the flow ends: after the query's n-th lock release. The query
# tags its page shard by shard (one lock per shard: the first 32),
# then walks the flow registry bucket by bucket (one lock per bucket ever
# used), then reads each entry of the page (one shard lock each): ("tag",
# f) is a fraction of the way through the tagging; ("end", k) the k-th
# release before the last — which covers every bucket of the walk (before
# and after the flow's own) and the reading of the entries.
PLACES = [("tag", 0.0), ("tag", 0.5), ("tag", 1.0)] + [("end", k) for k in range(12)]


@pytest.mark.parametrize("place", PLACES, ids=[f"{a}{b}" for a, b in PLACES])
def test_totals_are_exact_while_a_flow_ends_during_the_query(loaded, place):
    """Another processor ends a flow right after the query released one of
    its spin locks: the flow's traffic is counted exactly once — as active
    or as ended — so active + ended stays the sum of the process's flows,
    wherever the end falls."""
    e = loaded
    handles = [0xB00 + i for i in range(6)]
    counted = {}
    for i, h in enumerate(handles):
        family, protocol = (4, 6) if i % 2 else (6, 17)
        establish(e, h, family=family, protocol=protocol, pid=31, path=EDGE)
        counted[h] = traffic_of(e, h, family, protocol, i)
    establish(e, 0xBFF, pid=32, path=CURL)  # another process, untouched
    total = add(*counted.values())
    # How many locks one query takes here (deterministic for the image).
    before = e.lock_acquisitions
    list_processes(e)
    releases = e.lock_acquisitions - before
    phase, where = place
    nth = max(1, round(where * SHARDS)) if phase == "tag" else releases - where
    assert releases > SHARDS, releases
    victim = handles[3]
    (flow, layer, cid), ctx = e.context_of(victim)
    ended = []

    def flow_ends():
        ended.append(nth)
        del e.contexts[(flow, layer, cid)]
        e.flow_deletes.append((layer, cid, ctx))
        return [(e.callouts[cid].flow_delete, [layer, cid, ctx])]

    e.interpose("KeReleaseInStackQueuedSpinLock", flow_ends, nth=nth)
    page = list_processes(e)
    assert ended == [nth], f"the flow did not end during the query ({nth} of {releases} releases)"
    (edge,) = [p for p in page["processes"] if p["process_id"] == 31]
    reported = add(as_tuple(edge["active"]), as_tuple(edge["ended"]))
    assert reported == total, f"flow ending at release {nth} of {releases} counted {reported} != {total}"
    assert edge["active_flows"] in (5, 6)
    after = processes_by_identity(e)[(31, EDGE)]
    assert (as_tuple(after["active"]), as_tuple(after["ended"]), after["active_flows"]) == \
        (add(*[counted[h] for h in handles if h != victim]), counted[victim], 5)
    assert e.pool_errors == []


def fnv1a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


SHARDS = 32  # crates/wfpmon-core/src/process.rs: PROCESS_SHARDS


def shard_of(pid, path: str) -> int:
    """The shard of a process (crates/wfpmon-core/src/process.rs: FNV-1a of
    the path's UTF-16LE bytes, mixed with the pid by a Fibonacci multiply,
    top bits: 32 shards of 32 entries)."""
    mixed = ((((pid or 0) << 32) | fnv1a(path.encode("utf-16-le"))) * 0x9E3779B97F4A7C15) & MASK64
    return (mixed >> 40) & 31


def test_a_full_shard_evicts_the_longest_idle_process_or_leaves_a_flow_unattributed(loaded):
    """The table is fixed (32 shards of 32 entries). A 33rd process of a
    shard whose 32 processes all have active flows gets no entry: its flow
    is still tracked and counted, marked NO_PROCESS with key 0 in its
    events and flow entry, and counted as unattributed. Once processes of
    the shard have no active flow, a new one reuses the entry of the one
    idle longest (an eviction: same slot, new generation) — not that of a
    process idle more recently."""
    e = loaded
    pids = [pid for pid in range(1, 20000) if shard_of(pid, CURL) == 7][:36]
    assert len(pids) == 36
    for i, pid in enumerate(pids[:32]):
        establish(e, 0xC00 + i, pid=pid, path=CURL)
    establish(e, 0xC20, pid=pids[32], path=CURL)
    e.stream(0xC20, 77, send=True)
    header = list_processes(e)
    assert (header["unattributed"], header["evictions"]) == (1, 0)
    procs = processes_by_identity(e)
    assert len(procs) == 32 and (pids[32], CURL) not in procs
    assert {p["key"] & 0xFFFFFFFF for p in procs.values()} == set(range(7 * 32, 8 * 32))
    assert flows_by_id(e)[0xC20]["process_key"] == 0 and flows_by_id(e)[0xC20]["bytes_outbound"] == 77
    assert stats(e)["flows_active"] == 33
    # Two processes go idle: first the one at index 5, later the one at 9.
    e.advance_clock(SECOND)
    e.end_flow(0xC05)
    e.advance_clock(SECOND)
    e.end_flow(0xC09)
    old_key = procs[(pids[5], CURL)]["key"]
    establish(e, 0xC21, pid=pids[33], path=CURL)
    procs = processes_by_identity(e)
    header = list_processes(e)
    assert (header["evictions"], header["unattributed"]) == (1, 1)
    assert (pids[5], CURL) not in procs and (pids[9], CURL) in procs
    new_key = procs[(pids[33], CURL)]["key"]
    assert new_key & 0xFFFFFFFF == old_key & 0xFFFFFFFF and new_key >> 32 != old_key >> 32
    assert procs[(pids[33], CURL)]["flows_total"] == 1 and as_tuple(procs[(pids[33], CURL)]["ended"]) == (0, 0, 0, 0)
    # The unattributed flow ends: its events say there was no process.
    e.end_flow(0xC20)
    events, _, _ = all_events(e)
    mine = [ev for ev in events if ev["flow_id"] == 0xC20]
    assert [(ev["kind"], ev["flags"], ev["process_key"], ev["process_id"]) for ev in mine] == [
        (P.EVENT_ESTABLISHED, P.EVENT_FLAG_NO_PROCESS, 0, pids[32]),
        (P.EVENT_ENDED, P.EVENT_FLAG_NO_PROCESS, 0, pids[32])]
    assert mine[1]["bytes_outbound"] == 77
    assert [ev["process_key"] for ev in events if ev["flow_id"] == 0xC21] == [new_key]
    e.unload()
    assert e.pool_errors == [] and e.irp_errors() == []


def test_queries_run_one_at_a_time(loaded):
    """A second LIST_PROCESSES arriving while one is walking the registry
    (another thread's request, here dispatched after the first query's
    tenth lock release) is answered STATUS_DEVICE_BUSY at once; the first
    completes normally, and the next query succeeds again."""
    e = loaded
    establish(e, 0xD00, pid=5, path=CURL)
    other = e.make_irp(0x0E, P.IOCTL_LIST_PROCESSES, P.list_processes_request(), P.list_processes_out_len(4))
    e.interpose("KeReleaseInStackQueuedSpinLock", lambda: [e.dispatch_call(other)], nth=10)
    page = list_processes(e)
    assert [p["process_id"] for p in page["processes"]] == [5]
    assert [(c.status, c.information, c.output) for c in other.completions] == [(L.STATUS_DEVICE_BUSY, 0, b"")]
    assert [p["process_id"] for p in list_processes(e)["processes"]] == [5]
    assert e.pool_errors == []


def test_a_flow_whose_record_cannot_be_allocated_leaves_no_process_or_event(image):
    """ExAllocatePool2 fails for a flow's record: the flow is not tracked,
    counted as an allocation failure, and its process entry (made for it
    alone) is given back; no event is written."""
    e = FakeEngine(image)
    assert e.driver_entry() == 0
    allocations = e.counts.get("ExAllocatePool2", 0)
    e.faults["ExAllocatePool2"] = {allocations + 1: 0}
    establish(e, 0xE00, pid=6, path=CURL)
    assert e.contexts == {}
    assert stats(e)["allocation_failures"] == 1
    assert all_processes(e)[0] == [] and all_events(e)[0] == []
    establish(e, 0xE01, pid=6, path=CURL)
    procs = processes_by_identity(e)
    assert procs[(6, CURL)]["flows_total"] == 1
    assert [ev["flow_id"] for ev in all_events(e)[0]] == [0xE01]
    e.unload()
    assert e.pool_errors == [] and e.pool == {}
