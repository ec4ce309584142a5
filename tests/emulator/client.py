"""A user-mode client of \\Device\\WfpMon as the emulator tests drive it:
IOCTLs through the fake I/O manager (FakeEngine.send_irp), decoded with
protocol.py."""

import struct

import protocol as P
import wfp_layout as L
from conftest import KEYS

DEVICE_CONTROL = 0x0E


def ioctl(e, code, data=b"", out_len=0, file_object=None):
    """A request that must be answered at once: (status, information, output)."""
    return e.send_irp(DEVICE_CONTROL, code, data, out_len, file_object=file_object)


def read_events(e, cursor=0, max_events=0, capacity=P.MAX_EVENTS_PER_CALL, file_object=None):
    """One non-waiting READ_EVENTS; the decoded response."""
    status, info, raw = ioctl(e, P.IOCTL_READ_EVENTS, P.read_events_request(max_events, cursor),
                              P.read_events_out_len(capacity), file_object)
    assert status == L.STATUS_SUCCESS, hex(status)
    assert info == len(raw)
    return P.parse_events(raw)


def all_events(e, cursor=0):
    """Every event from `cursor` to the newest, page by page. Returns
    (events, dropped reported on the first page, pages)."""
    events, dropped, pages = [], None, 0
    while True:
        page = read_events(e, cursor)
        pages += 1
        if dropped is None:
            dropped = page["dropped"]
        else:
            assert page["dropped"] == 0, "events lost between two pages of one reader"
        events += page["events"]
        if page["returned"] == 0:
            return events, dropped, pages
        assert page["next"] == page["events"][-1]["seq"] + 1
        cursor = page["next"]


def pend_read(e, file_object, cursor=P.FROM_NOW, capacity=16, max_events=0):
    """A waiting READ_EVENTS that must pend: STATUS_PENDING returned, the
    IRP marked pending and not completed yet."""
    rec = e.send_irp_async(DEVICE_CONTROL, P.IOCTL_READ_EVENTS,
                           P.read_events_request(max_events, cursor, wait=True),
                           P.read_events_out_len(capacity), file_object)
    assert rec.pending and e.marked_pending(rec), "the read did not pend"
    assert not rec.completed, "a pended read was completed with nothing to read"
    assert rec.queued, "a pended read is not in the cancel-safe queue"
    return rec


def completed_events(rec):
    assert len(rec.completions) == 1, f"completed {len(rec.completions)} times"
    assert rec.status == L.STATUS_SUCCESS, hex(rec.status)
    assert rec.information == len(rec.output)
    return P.parse_events(rec.output)


def pended_cursor(e, rec):
    """The cursor a pended request carries (bytes 16..24 of its system
    buffer: the driver writes the resolved cursor back when it pends)."""
    return struct.unpack("<Q", e.se.mem_read(rec.system_buffer + 16, 8))[0]


def list_processes(e, max_entries=0, cursor_slot=0, capacity=P.MAX_PROCESSES_PER_CALL):
    status, info, raw = ioctl(e, P.IOCTL_LIST_PROCESSES, P.list_processes_request(max_entries, cursor_slot),
                              P.list_processes_out_len(capacity))
    assert status == L.STATUS_SUCCESS, hex(status)
    assert info == len(raw)
    return P.parse_processes(raw)


def all_processes(e, batch=0):
    return P.list_all_processes(lambda request, out_len: ioctl(e, P.IOCTL_LIST_PROCESSES, request, out_len),
                                batch)


def processes_by_identity(e):
    """{(pid or None, path or None): entry} as the driver reports them."""
    out = {}
    for p in all_processes(e)[0]:
        pid = None if p["flags"] & P.PROCESS_ID_MISSING else p["process_id"]
        path = None if p["flags"] & P.PROCESS_PATH_MISSING else p["path"]
        assert (pid, path) not in out, f"process {(pid, path)} reported twice"
        out[(pid, path)] = p
    return out


def flows_by_id(e):
    flows, _ = P.list_all(lambda request, out_len: ioctl(e, P.IOCTL_LIST_FLOWS, request, out_len))
    return {f["flow_id"]: f for f in flows}


def stats(e, live=False):
    """QUERY_STATS: walk-free (ended flows' traffic), or with live flows'
    traffic summed (STATS_LIVE_TRAFFIC)."""
    request = P.query_stats_request(P.STATS_LIVE_TRAFFIC if live else 0)
    status, info, raw = ioctl(e, P.IOCTL_QUERY_STATS, request, P.STATS_SIZE)
    assert (status, info) == (0, P.STATS_SIZE)
    s = P.parse_stats(raw)
    assert s["flags"] == (P.STATS_INCLUDES_LIVE_TRAFFIC if live else 0)
    return s


# Flows ---------------------------------------------------------------------

V6_LOCAL = bytes.fromhex("fd000000000000000000000000000001")


def v6(n):
    return bytes.fromhex("20010db8000000000000000000000000")[:14] + n.to_bytes(2, "big")


def flow_args(handle, family=4, protocol=6, pid=1000, path=None, local_port=None, remote_port=443,
              direction=L.FWP_DIRECTION_OUTBOUND):
    """(args, kwargs) of FakeEngine.establish_call for one flow."""
    key = KEYS["wfpmon-flow-established-v4" if family == 4 else "wfpmon-flow-established-v6"]
    local = 0x0A000001 if family == 4 else V6_LOCAL
    remote = (0x5DB8D800 + (handle & 0xFF)) if family == 4 else v6(handle & 0xFFFF)
    lport = local_port if local_port is not None else 40000 + (handle & 0x3FFF)
    return ((key, family, protocol, local, lport, remote, remote_port, direction, handle, pid),
            {"path": path})


def establish(e, handle, **kwargs):
    args, kw = flow_args(handle, **kwargs)
    return e.establish(*args, **kw)
