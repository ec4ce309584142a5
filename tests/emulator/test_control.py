"""The control device of the real wfpmon.sys: who may open it, and every
IOCTL with valid and malformed buffers."""

import struct

import pytest

import protocol as P
import wfp_layout as L
from conftest import KEYS

DEVICE_CONTROL = 0x0E


def ioctl(e, code, data=b"", out_len=0):
    return e.send_irp(DEVICE_CONTROL, code, data, out_len)


def make_flows(e, n, start=0x1000):
    for i in range(n):
        e.establish(KEYS["wfpmon-flow-established-v4"], 4, 17, 0x0A000001, 1000 + i,
                    0x0A000002, 53, L.FWP_DIRECTION_OUTBOUND, start + i, 500 + i)


def test_device_is_secured_to_system_and_administrators(loaded):
    """The descriptor applied at creation is D:P(A;;FA;;;SY)(A;;FA;;;BA):
    SDDL_DEVOBJ_SYS_ALL_ADM_ALL with GA mapped to FILE_ALL_ACCESS."""
    ((obj, sd),) = loaded.security
    assert obj in loaded.devices, "the DACL went to the device object"
    (opened,) = loaded.api_sequence("ObOpenObjectByPointer")
    obj_, attributes, access, obj_type, mode = opened.args
    assert attributes & loaded.OBJ_KERNEL_HANDLE and access == loaded.WRITE_DAC and mode == 0
    (call,) = loaded.api_sequence("ZwSetSecurityObject")
    assert call.args[1] == 4, "DACL_SECURITY_INFORMATION"
    (closed,) = loaded.api_sequence("ZwClose")
    assert closed.args[0] == call.args[0] and loaded.handles == {}
    rev, _, control, owner, group, sacl, dacl = struct.unpack_from("<BBHIIII", sd)
    assert rev == 1 and control == 0x8000 | 0x1000 | 0x0004  # self-relative, protected, DACL
    assert (owner, group, sacl) == (0, 0, 0)
    acl_rev, _, acl_size, ace_count = struct.unpack_from("<BBHH", sd, dacl)
    assert (acl_rev, ace_count, dacl + acl_size) == (2, 2, len(sd))
    sids, at = [], dacl + 8
    for _ in range(ace_count):
        ace_type, _, size, mask = struct.unpack_from("<BBHI", sd, at)
        assert ace_type == 0 and mask == 0x1F01FF  # ACCESS_ALLOWED, FILE_ALL_ACCESS
        count = sd[at + 9]
        subs = struct.unpack_from(f"<{count}I", sd, at + 16)
        sids.append(f"S-{sd[at + 8]}-{int.from_bytes(sd[at + 10:at + 16], 'big')}-" + "-".join(map(str, subs)))
        at += size
    assert sids == ["S-1-5-18", "S-1-5-32-544"]


@pytest.mark.parametrize("major", [0x00, 0x02, 0x12])  # CREATE, CLOSE, CLEANUP
def test_open_and_close_succeed(loaded, major):
    assert loaded.send_irp(major)[:2] == (0, 0)


@pytest.mark.parametrize("name", ["\\anything", "\\", "x"])
def test_opening_a_name_below_the_device_is_refused(loaded, name):
    """\\Device\\WfpMon has no namespace: an open of
    \\Device\\WfpMon\\anything (non-empty FileObject->FileName) fails
    ("Controlling Device Namespace Access")."""
    assert loaded.send_irp(0x00, file_name=name)[:2] == (L.STATUS_OBJECT_NAME_NOT_FOUND, 0)
    assert loaded.send_irp(0x00, file_name="")[:2] == (0, 0)


@pytest.mark.parametrize("major", [0x03, 0x04, 0x05, 0x0F, 0x10, 0x1B])
def test_other_major_functions_fail_cleanly(loaded, major):
    assert loaded.send_irp(major)[:2] == (L.STATUS_INVALID_DEVICE_REQUEST, 0)


def test_a_flow_ending_during_a_stats_query_is_counted_once(loaded):
    """Another processor deletes a flow right after the statistics query
    released a bucket lock (before or after the flow's own bucket was read):
    its traffic must be counted once (as active, or as retired), never
    twice."""
    key = KEYS["wfpmon-flow-established-v4"]
    loaded.establish(key, 4, 6, 1, 2, 3, 4, L.FWP_DIRECTION_OUTBOUND, 0x51, 9)
    loaded.establish(key, 4, 6, 1, 5, 3, 4, L.FWP_DIRECTION_OUTBOUND, 0x52, 9)
    loaded.stream(0x51, 1000, send=True)
    loaded.stream(0x52, 300, send=False)
    (flow, layer, cid), ctx = loaded.context_of(0x51)

    def flow_ends():
        del loaded.contexts[(flow, layer, cid)]
        loaded.flow_deletes.append((layer, cid, ctx))
        return [(loaded.callouts[cid].flow_delete, [layer, cid, ctx])]

    loaded.interpose("KeReleaseInStackQueuedSpinLock", flow_ends)
    status, info, raw = ioctl(loaded, P.IOCTL_QUERY_STATS, P.query_stats_request(P.STATS_LIVE_TRAFFIC), 4096)
    assert (status, info) == (0, P.STATS_SIZE)
    s = P.parse_stats(raw)
    assert s["flags"] == P.STATS_INCLUDES_LIVE_TRAFFIC
    assert (s["bytes_outbound"], s["bytes_inbound"]) == (1000, 300)
    assert loaded.context_of(0x51) is None, "the flow did end during the query"
    after = P.parse_stats(ioctl(loaded, P.IOCTL_QUERY_STATS, P.query_stats_request(), 4096)[2])
    assert (after["bytes_outbound"], after["flows_active"], after["flows_deleted"]) == (1000, 1, 1)


def test_stats_reflect_flows_created_through_classify(loaded):
    make_flows(loaded, 7)
    status, info, raw = ioctl(loaded, P.IOCTL_QUERY_STATS, P.query_stats_request(), 4096)
    assert (status, info) == (0, P.STATS_SIZE)
    s = P.parse_stats(raw)
    assert s["flows_active"] == 7 and s["flows_tracked"] == 7 and s["counting_enabled"] == 1


@pytest.mark.parametrize("code,data,out_len,expected", [
    (P.IOCTL_QUERY_STATS, b"", 4096, L.STATUS_INVALID_BUFFER_SIZE),
    (P.IOCTL_QUERY_STATS, b"\x01", 4096, L.STATUS_INVALID_BUFFER_SIZE),
    (P.IOCTL_QUERY_STATS, P.query_stats_request()[:7], 4096, L.STATUS_INVALID_BUFFER_SIZE),
    (P.IOCTL_QUERY_STATS, P.query_stats_request() + b"\0", 4096, L.STATUS_INVALID_BUFFER_SIZE),
    (P.IOCTL_QUERY_STATS, b"\xff" * 65536, 4096, L.STATUS_INVALID_BUFFER_SIZE),
    (P.IOCTL_QUERY_STATS, P.query_stats_request(), 0, L.STATUS_BUFFER_TOO_SMALL),
    (P.IOCTL_QUERY_STATS, P.query_stats_request(), P.STATS_SIZE - 1, L.STATUS_BUFFER_TOO_SMALL),
    (P.IOCTL_QUERY_STATS, struct.pack("<IIII", P.VERSION - 1, 16, 0, 0), 4096, L.STATUS_REVISION_MISMATCH),
    (P.IOCTL_QUERY_STATS, struct.pack("<IIII", P.VERSION + 1, 16, 0, 0), 4096, L.STATUS_REVISION_MISMATCH),
    (P.IOCTL_QUERY_STATS, struct.pack("<IIII", P.VERSION, 17, 0, 0), 4096, L.STATUS_INVALID_PARAMETER),
    # Protocol 4's header-only request; an unknown flag; reserved not zero.
    (P.IOCTL_QUERY_STATS, struct.pack("<II", P.VERSION, 8), 4096, L.STATUS_INVALID_BUFFER_SIZE),
    (P.IOCTL_QUERY_STATS, P.query_stats_request(flags=2), 4096, L.STATUS_INVALID_PARAMETER),
    (P.IOCTL_QUERY_STATS, P.query_stats_request(flags=1, reserved=1), 4096, L.STATUS_INVALID_PARAMETER),
    (P.IOCTL_LIST_FLOWS, P.list_flows_request()[:15], 4096, L.STATUS_INVALID_BUFFER_SIZE),
    (P.IOCTL_LIST_FLOWS, P.list_flows_request(reserved=1), 4096, L.STATUS_INVALID_PARAMETER),
    (P.IOCTL_LIST_FLOWS, P.list_flows_request(0xFFFFFFFF), 4096, L.STATUS_INTEGER_OVERFLOW),
    (P.IOCTL_LIST_FLOWS, P.list_flows_request(), P.LIST_HEADER_SIZE - 1, L.STATUS_BUFFER_TOO_SMALL),
    (P.IOCTL_SET_COUNTING, P.set_counting_request(2), 0, L.STATUS_INVALID_PARAMETER),
    (P.IOCTL_SET_COUNTING, P.set_counting_request(1, reserved=5), 0, L.STATUS_INVALID_PARAMETER),
    (P.IOCTL_SET_COUNTING, b"", 0, L.STATUS_INVALID_BUFFER_SIZE),
    (P.ctl_code(P.FILE_DEVICE_WFPMON, 0x905, 0, 1), P.query_stats_request(), 4096, L.STATUS_INVALID_DEVICE_REQUEST),
    (P.ctl_code(0x22, 0x900, 0, 1), P.query_stats_request(), 4096, L.STATUS_INVALID_DEVICE_REQUEST),
    # The codes of protocol 1 (FILE_DEVICE_NETWORK, Microsoft's type) are gone.
    (P.ctl_code(0x12, 0x900, 0, 1), P.query_stats_request(), 4096, L.STATUS_INVALID_DEVICE_REQUEST),
    (P.ctl_code(P.FILE_DEVICE_WFPMON, 0x900, 3, 1), P.query_stats_request(), 4096, L.STATUS_INVALID_DEVICE_REQUEST),
    (0, b"", 0, L.STATUS_INVALID_DEVICE_REQUEST),
])
def test_malformed_requests_get_precise_statuses_and_no_output(loaded, code, data, out_len, expected):
    # Shows rule K16: nothing is copied back.
    status, info, raw = ioctl(loaded, code, data, out_len)
    assert (status, info, raw) == (expected, 0, b"")


def send_list(e):
    return lambda request, out_len: ioctl(e, P.IOCTL_LIST_FLOWS, request, out_len)


def test_flow_list_is_paged_with_a_cursor(loaded):
    """Each call returns a bounded batch (what the buffer holds, at most
    max_entries, never more than 256) and the cursor to continue with; the
    total is the maintained count. A small buffer simply means more calls."""
    make_flows(loaded, 5)
    out_len = P.LIST_HEADER_SIZE + 2 * P.ENTRY_SIZE + P.ENTRY_SIZE - 1
    status, info, raw = ioctl(loaded, P.IOCTL_LIST_FLOWS, P.list_flows_request(), out_len)
    assert status == 0 and info == P.LIST_HEADER_SIZE + 2 * P.ENTRY_SIZE
    page = P.parse_flow_list(raw)
    assert (page["total"], page["returned"], page["more"]) == (5, 2, True)
    flows, calls = P.list_all(send_list(loaded), out_len=out_len)
    assert sorted(f["flow_id"] for f in flows) == [0x1000 + i for i in range(5)]
    assert calls == 3
    # Header only: the count, and the cursor stays where it was.
    status, info, raw = ioctl(loaded, P.IOCTL_LIST_FLOWS, P.list_flows_request(), P.LIST_HEADER_SIZE)
    page = P.parse_flow_list(raw)
    assert (status, page["total"], page["returned"], page["more"], page["cursor"]) == (0, 5, 0, True, (0, 0))
    # max_entries limits a batch even when the buffer is larger.
    status, info, raw = ioctl(loaded, P.IOCTL_LIST_FLOWS, P.list_flows_request(3), 1 << 16)
    assert P.parse_flow_list(raw)["returned"] == 3
    # A cursor outside the registry is refused.
    status, info, raw = ioctl(loaded, P.IOCTL_LIST_FLOWS, P.list_flows_request(0, P.LIST_BUCKETS), 4096)
    assert (status, info) == (L.STATUS_INVALID_PARAMETER, 0)


def test_a_batch_never_exceeds_256_flows_and_the_lock_is_taken_per_bucket(loaded):
    make_flows(loaded, 300)
    before = loaded.lock_acquisitions
    status, info, raw = ioctl(loaded, P.IOCTL_LIST_FLOWS, P.list_flows_request(), 1 << 16)
    page = P.parse_flow_list(raw)
    assert (page["returned"], page["more"], page["total"]) == (256, True, 300)
    # One bucket lock at a time: many short acquisitions, never two held.
    assert loaded.lock_acquisitions - before > 100
    assert loaded.pool_errors == []
    flows, calls = P.list_all(send_list(loaded), out_len=1 << 16)
    assert len({f["flow_id"] for f in flows}) == len(flows) == 300 and calls == 2


def test_flows_coming_and_going_between_batches(loaded):
    """A flow present for the whole listing pass is listed exactly once, a
    flow that comes or goes during it at most once, none twice."""
    make_flows(loaded, 60)
    cursor, listed = (0, 0), []
    new = 0x5000
    while True:
        _, _, raw = ioctl(loaded, P.IOCTL_LIST_FLOWS, P.list_flows_request(7, *cursor), 1 << 16)
        page = P.parse_flow_list(raw)
        listed += [f["flow_id"] for f in page["flows"]]
        # Between batches: one old flow ends, one new flow arrives.
        gone = 0x1000 + 3 * (len(listed) // 7)
        if loaded.context_of(gone):
            loaded.end_flow(gone)
        make_flows(loaded, 1, start=new)
        new += 1
        if not page["more"]:
            break
        cursor = page["cursor"]
    assert len(listed) == len(set(listed)), "a flow listed twice"
    stable = {0x1000 + i for i in range(60) if i % 3 != 0}
    assert stable <= set(listed)


def test_flows_listed_while_others_are_deleted(loaded):
    make_flows(loaded, 40)
    for round_ in range(4):
        for i in range(round_ * 10, round_ * 10 + 5):
            loaded.end_flow(0x1000 + i)
        flows, _ = P.list_all(send_list(loaded))
        ids = {f["flow_id"] for f in flows}
        expected = {0x1000 + i for i in range(40)} - {0x1000 + r * 10 + k for r in range(round_ + 1) for k in range(5)}
        assert ids == expected and len(flows) == len(expected)
    loaded.unload()
    assert loaded.pool == {}


def test_statistics_take_no_lock_and_count_ended_flows_unless_live_traffic_is_asked(loaded):
    """By default QUERY_STATS reads maintained counters only — no bucket is
    visited, no lock taken, whatever the number of flows — and its byte and
    packet totals are the ended flows' (flags 0). STATS_LIVE_TRAFFIC adds
    the live flows' traffic by visiting the buckets (flags 1)."""
    key = KEYS["wfpmon-flow-established-v4"]
    for handle in (0x51, 0x52, 0x53):
        loaded.establish(key, 4, 6, 1, handle, 3, 4, L.FWP_DIRECTION_OUTBOUND, handle, 9)
    make_flows(loaded, 200)
    loaded.stream(0x51, 1000, send=True)
    loaded.stream(0x51, 10, send=False)
    loaded.stream(0x52, 300, send=False)
    loaded.stream(0x53, 7, send=True)
    loaded.end_flow(0x51)
    before = loaded.lock_acquisitions
    status, info, raw = ioctl(loaded, P.IOCTL_QUERY_STATS, P.query_stats_request(), 4096)
    assert (status, info) == (0, P.STATS_SIZE)
    assert loaded.lock_acquisitions == before, "the default query takes no lock"
    cheap = P.parse_stats(raw)
    assert cheap["flags"] == 0
    assert (cheap["flows_active"], cheap["flows_tracked"], cheap["flows_deleted"]) == (202, 203, 1)
    assert (cheap["bytes_outbound"], cheap["bytes_inbound"]) == (1000, 10), "ended flows only"
    assert (cheap["packets_outbound"], cheap["packets_inbound"]) == (1, 1)
    status, info, raw = ioctl(loaded, P.IOCTL_QUERY_STATS, P.query_stats_request(P.STATS_LIVE_TRAFFIC), 4096)
    assert (status, info) == (0, P.STATS_SIZE)
    assert loaded.lock_acquisitions - before > 100, "the live-traffic query visits the buckets"
    full = P.parse_stats(raw)
    assert full["flags"] == P.STATS_INCLUDES_LIVE_TRAFFIC
    assert full["flows_active"] == 202
    assert (full["bytes_outbound"], full["bytes_inbound"]) == (1007, 310)
    assert (full["packets_outbound"], full["packets_inbound"]) == (2, 2)
    assert loaded.pool_errors == []
