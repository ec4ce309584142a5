"""The control protocol as a client sees it, written from
crates/wfpmon-core/src/protocol.rs's documented layouts (little-endian,
fixed offsets), independently of the Rust encoders."""

import struct

VERSION = 5
# Vendor device type (0x8000-0xFFFF, "Defining I/O Control Codes").
FILE_DEVICE_WFPMON = 0x8F4D


def ctl_code(dev, fn, method, access):
    return (dev << 16) | (access << 14) | (fn << 2) | method


IOCTL_QUERY_STATS = ctl_code(FILE_DEVICE_WFPMON, 0x900, 0, 1)
IOCTL_LIST_FLOWS = ctl_code(FILE_DEVICE_WFPMON, 0x901, 0, 1)
IOCTL_SET_COUNTING = ctl_code(FILE_DEVICE_WFPMON, 0x902, 0, 3)
IOCTL_READ_EVENTS = ctl_code(FILE_DEVICE_WFPMON, 0x903, 0, 1)
IOCTL_LIST_PROCESSES = ctl_code(FILE_DEVICE_WFPMON, 0x904, 0, 1)

STATS_SIZE = 88
LIST_HEADER_SIZE = 32
ENTRY_SIZE = 104

STATS_FIELDS = ("counting_enabled", "flags", "flows_active", "flows_tracked", "flows_deleted",
                "allocation_failures", "association_failures", "bytes_inbound", "bytes_outbound",
                "packets_inbound", "packets_outbound")


# QueryStatsRequest.flags: also sum the traffic of live flows (a walk).
STATS_LIVE_TRAFFIC = 1
# Stats.flags: the byte and packet totals include live flows.
STATS_INCLUDES_LIVE_TRAFFIC = 1


def query_stats_request(flags=0, reserved=0):
    return struct.pack("<IIII", VERSION, 16, flags, reserved)


MAX_FLOWS_PER_CALL = 256
LIST_BUCKETS = 32768
FLOW_LIST_MORE = 1


def list_flows_request(max_entries=0, bucket=0, seq=0, reserved=0):
    return struct.pack("<IIIIII", VERSION, 24, max_entries, bucket, seq, reserved)


def set_counting_request(enable, reserved=0):
    return struct.pack("<IIII", VERSION, 16, enable, reserved)


def parse_stats(raw):
    version, size = struct.unpack_from("<II", raw)
    assert (version, size) == (VERSION, STATS_SIZE), (version, size)
    values = struct.unpack_from("<II9Q", raw, 8)
    return dict(zip(STATS_FIELDS, values))


def parse_flow_list(raw):
    version, size, total, returned, entry_size, flags, bucket, seq = struct.unpack_from("<8I", raw)
    assert version == VERSION and entry_size == ENTRY_SIZE
    assert size == LIST_HEADER_SIZE + returned * ENTRY_SIZE == len(raw), (size, returned, len(raw))
    flows = []
    for i in range(returned):
        off = LIST_HEADER_SIZE + i * ENTRY_SIZE
        (flow_id, pid, age_ms, bin_, bout, pin, pout) = struct.unpack_from("<7Q", raw, off)
        local, remote = raw[off + 56:off + 72], raw[off + 72:off + 88]
        lport, rport, family, proto, direction = struct.unpack_from("<HHHBB", raw, off + 88)
        (process_key,) = struct.unpack_from("<Q", raw, off + 96)
        flows.append(dict(flow_id=flow_id, process_id=pid, age_ms=age_ms, bytes_inbound=bin_,
                          bytes_outbound=bout, packets_inbound=pin, packets_outbound=pout,
                          local=local, remote=remote, local_port=lport, remote_port=rport,
                          family=family, protocol=proto, direction=direction,
                          process_key=process_key))
    return dict(total=total, returned=returned, more=bool(flags & FLOW_LIST_MORE), cursor=(bucket, seq),
                flows=flows)


def list_all(send, batch=0, out_len=64 * 1024):
    """Pages through the whole list as a client does: `send(request,
    out_len)` returns (status, information, output). Returns (flows, calls)."""
    flows, cursor, calls = [], (0, 0), 0
    while True:
        status, _, raw = send(list_flows_request(batch, *cursor), out_len)
        assert status == 0, hex(status)
        calls += 1
        page = parse_flow_list(raw)
        flows += page["flows"]
        if not page["more"]:
            return flows, calls
        cursor = page["cursor"]


# ---- flow events (IOCTL_WFPMON_READ_EVENTS) ------------------------------

READ_EVENTS_REQUEST_SIZE = 24
EVENTS_HEADER_SIZE = 48
EVENT_SIZE = 128
MAX_EVENTS_PER_CALL = 256
EVENT_CAPACITY = 16384
READ_EVENTS_WAIT = 1
FROM_NOW = (1 << 64) - 1

EVENT_ESTABLISHED, EVENT_ENDED = 1, 2
EVENT_FLAG_UNLOADING, EVENT_FLAG_NO_PROCESS, EVENT_FLAG_NOT_TRACKED = 1, 2, 4


def read_events_request(max_events=0, cursor=0, wait=False, flags=None, version=VERSION,
                        size=READ_EVENTS_REQUEST_SIZE):
    """ReadEventsRequest: header, max_events u32, flags u32, cursor u64."""
    if flags is None:
        flags = READ_EVENTS_WAIT if wait else 0
    return struct.pack("<IIIIQ", version, size, max_events, flags, cursor)


def read_events_out_len(n):
    return EVENTS_HEADER_SIZE + n * EVENT_SIZE


def parse_event(raw, off=0):
    """FlowEvent, 128 bytes."""
    seq, time, kind, flags, family, pid, key, flow_id, duration = struct.unpack_from("<QQBBHIQQQ", raw, off)
    local, remote = raw[off + 48:off + 64], raw[off + 64:off + 80]
    lport, rport, proto, direction, reserved = struct.unpack_from("<HHBBH", raw, off + 80)
    bin_, bout, pin, pout, established = struct.unpack_from("<5Q", raw, off + 88)
    return dict(seq=seq, time=time, kind=kind, flags=flags, family=family, process_id=pid,
                process_key=key, flow_id=flow_id, duration=duration, local=local, remote=remote,
                local_port=lport, remote_port=rport, protocol=proto, direction=direction,
                reserved=reserved, bytes_inbound=bin_, bytes_outbound=bout, packets_inbound=pin,
                packets_outbound=pout, established=established)


def parse_events(raw):
    """EventsHeader {header, returned, event_size, next, dropped, oldest,
    now} (48 bytes) and its events; the sizes are checked."""
    version, size, returned, event_size, nxt, dropped, oldest, now = struct.unpack_from("<IIIIQQQQ", raw)
    assert version == VERSION and event_size == EVENT_SIZE, (version, event_size)
    assert size == EVENTS_HEADER_SIZE + returned * EVENT_SIZE == len(raw), (size, returned, len(raw))
    assert returned <= MAX_EVENTS_PER_CALL
    events = [parse_event(raw, EVENTS_HEADER_SIZE + i * EVENT_SIZE) for i in range(returned)]
    return dict(returned=returned, next=nxt, dropped=dropped, oldest=oldest, now=now, events=events)


# ---- per-process totals (IOCTL_WFPMON_LIST_PROCESSES) --------------------

LIST_PROCESSES_REQUEST_SIZE = 16
PROCESS_LIST_HEADER_SIZE = 56
PROCESS_ENTRY_SIZE = 624
MAX_PROCESSES_PER_CALL = 64
PROCESS_SLOTS = 1024
PATH_UNITS = 256
PROCESS_LIST_MORE = 1
PROCESS_ID_MISSING, PROCESS_PATH_MISSING, PROCESS_PATH_TRUNCATED = 1, 2, 4


def list_processes_request(max_entries=0, cursor_slot=0, version=VERSION, size=LIST_PROCESSES_REQUEST_SIZE):
    return struct.pack("<IIII", version, size, max_entries, cursor_slot)


def list_processes_out_len(n):
    return PROCESS_LIST_HEADER_SIZE + n * PROCESS_ENTRY_SIZE


def parse_process(raw, off):
    """ProcessEntry, 624 bytes: key u64, process_id u32, flags u16,
    path_units u16, active_flows u32, reserved u32, flows_total u64,
    first_seen u64, last_seen u64, active [u64; 4], ended [u64; 4],
    path [u16; 256]."""
    key, pid, flags, units, active_flows, reserved, total, first, last = struct.unpack_from(
        "<QIHHIIQQQ", raw, off)
    active = struct.unpack_from("<4Q", raw, off + 48)
    ended = struct.unpack_from("<4Q", raw, off + 80)
    path_units = struct.unpack_from(f"<{PATH_UNITS}H", raw, off + 112)
    assert units <= PATH_UNITS
    path = raw[off + 112:off + 112 + 2 * units].decode("utf-16-le", "surrogatepass")
    names = ("bytes_inbound", "bytes_outbound", "packets_inbound", "packets_outbound")
    return dict(key=key, process_id=pid, flags=flags, path_units=units, active_flows=active_flows,
                reserved=reserved, flows_total=total, first_seen=first, last_seen=last,
                active=dict(zip(names, active)), ended=dict(zip(names, ended)), path=path,
                path_tail_zero=all(u == 0 for u in path_units[units:]))


def parse_processes(raw):
    """ProcessListHeader {header, returned, entry_size, flags, next_slot,
    now u64, capacity u32, reserved u32, evictions u64, unattributed_flows
    u64} (56 bytes) and its entries; the sizes are checked."""
    (version, size, returned, entry_size, flags, next_slot, now, capacity, reserved, evictions,
     unattributed) = struct.unpack_from("<IIIIIIQIIQQ", raw)
    assert version == VERSION and entry_size == PROCESS_ENTRY_SIZE, (version, entry_size)
    assert size == PROCESS_LIST_HEADER_SIZE + returned * PROCESS_ENTRY_SIZE == len(raw), (size, returned, len(raw))
    assert returned <= MAX_PROCESSES_PER_CALL
    processes = [parse_process(raw, PROCESS_LIST_HEADER_SIZE + i * PROCESS_ENTRY_SIZE) for i in range(returned)]
    return dict(returned=returned, more=bool(flags & PROCESS_LIST_MORE), flags=flags, next_slot=next_slot,
                now=now, capacity=capacity, reserved=reserved, evictions=evictions,
                unattributed=unattributed, processes=processes)


def list_all_processes(send, batch=0, out_len=list_processes_out_len(MAX_PROCESSES_PER_CALL)):
    """Pages through every process: `send(request, out_len)` returns
    (status, information, output). Returns (processes, pages)."""
    processes, slot, pages = [], 0, []
    while True:
        status, _, raw = send(list_processes_request(batch, slot), out_len)
        assert status == 0, hex(status)
        page = parse_processes(raw)
        pages.append(page)
        processes += page["processes"]
        if not page["more"]:
            return processes, pages
        slot = page["next_slot"]
