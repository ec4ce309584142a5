"""The control protocol as a client sees it, written from
crates/wfpmon-core/src/protocol.rs's documented layouts (little-endian,
fixed offsets), independently of the Rust encoders."""

import struct

VERSION = 3
# Vendor device type (0x8000-0xFFFF, "Defining I/O Control Codes").
FILE_DEVICE_WFPMON = 0x8F4D


def ctl_code(dev, fn, method, access):
    return (dev << 16) | (access << 14) | (fn << 2) | method


IOCTL_QUERY_STATS = ctl_code(FILE_DEVICE_WFPMON, 0x900, 0, 1)
IOCTL_LIST_FLOWS = ctl_code(FILE_DEVICE_WFPMON, 0x901, 0, 1)
IOCTL_SET_COUNTING = ctl_code(FILE_DEVICE_WFPMON, 0x902, 0, 3)

STATS_SIZE = 88
LIST_HEADER_SIZE = 32
ENTRY_SIZE = 96

STATS_FIELDS = ("counting_enabled", "reserved", "flows_active", "flows_tracked", "flows_deleted",
                "allocation_failures", "association_failures", "bytes_inbound", "bytes_outbound",
                "packets_inbound", "packets_outbound")


def query_stats_request():
    return struct.pack("<II", VERSION, 8)


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
        flows.append(dict(flow_id=flow_id, process_id=pid, age_ms=age_ms, bytes_inbound=bin_,
                          bytes_outbound=bout, packets_inbound=pin, packets_outbound=pout,
                          local=local, remote=remote, local_port=lport, remote_port=rport,
                          family=family, protocol=proto, direction=direction))
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
