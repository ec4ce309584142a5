"""The two IOCTLs of protocol 4 (READ_EVENTS, LIST_PROCESSES) against
malformed requests: every one answered at once with its precise NTSTATUS,
no output, nothing pended, and nothing of the driver's state lost or
changed — checked case by case and with seeded random requests against an
independent oracle written from the protocol's documented rules."""

import random
import struct

import pytest

import protocol as P
import wfp_layout as L
from client import (DEVICE_CONTROL, all_events, establish, flows_by_id, ioctl, pend_read, processes_by_identity,
                    completed_events, stats)

EDGE = "\\device\\harddiskvolume3\\program files (x86)\\microsoft\\edge\\application\\msedge.exe"
READ, LIST = P.IOCTL_READ_EVENTS, P.IOCTL_LIST_PROCESSES
OK_READ_OUT = P.read_events_out_len(4)
OK_LIST_OUT = P.list_processes_out_len(4)

S = L  # statuses


def with_version(req, version):
    return struct.pack("<I", version) + req[4:]


def with_size(req, size):
    return req[:4] + struct.pack("<I", size) + req[8:]


CASES = [
    # READ_EVENTS: input size (the request is 24 bytes) ...
    ("read: no input", READ, b"", OK_READ_OUT, S.STATUS_INVALID_BUFFER_SIZE),
    ("read: 1 byte", READ, b"\x04", OK_READ_OUT, S.STATUS_INVALID_BUFFER_SIZE),
    ("read: header only", READ, P.read_events_request()[:8], OK_READ_OUT, S.STATUS_INVALID_BUFFER_SIZE),
    ("read: 23 bytes", READ, P.read_events_request()[:23], OK_READ_OUT, S.STATUS_INVALID_BUFFER_SIZE),
    ("read: 25 bytes", READ, P.read_events_request() + b"\0", OK_READ_OUT, S.STATUS_INVALID_BUFFER_SIZE),
    ("read: 64 KiB", READ, P.read_events_request() + bytes(65536 - 24), 65536, S.STATUS_INVALID_BUFFER_SIZE),
    # ... version, header size, flags ...
    ("read: version 4", READ, with_version(P.read_events_request(), P.VERSION - 1), OK_READ_OUT, S.STATUS_REVISION_MISMATCH),
    ("read: version 6", READ, with_version(P.read_events_request(wait=True), P.VERSION + 1), OK_READ_OUT,
     S.STATUS_REVISION_MISMATCH),
    ("read: version 0", READ, with_version(P.read_events_request(), 0), OK_READ_OUT, S.STATUS_REVISION_MISMATCH),
    ("read: header size 23", READ, with_size(P.read_events_request(), 23), OK_READ_OUT, S.STATUS_INVALID_PARAMETER),
    ("read: header size 0", READ, with_size(P.read_events_request(wait=True), 0), OK_READ_OUT,
     S.STATUS_INVALID_PARAMETER),
    ("read: flags 2", READ, P.read_events_request(flags=2), OK_READ_OUT, S.STATUS_INVALID_PARAMETER),
    ("read: flags 3", READ, P.read_events_request(flags=3), OK_READ_OUT, S.STATUS_INVALID_PARAMETER),
    ("read: flags high bit", READ, P.read_events_request(flags=0x80000001), OK_READ_OUT, S.STATUS_INVALID_PARAMETER),
    ("read: flags all", READ, P.read_events_request(flags=0xFFFFFFFF), OK_READ_OUT, S.STATUS_INVALID_PARAMETER),
    # ... and an output too small for the header and one event (waiting or not).
    ("read: no output", READ, P.read_events_request(), 0, S.STATUS_BUFFER_TOO_SMALL),
    ("read: header-size output", READ, P.read_events_request(wait=True), P.EVENTS_HEADER_SIZE,
     S.STATUS_BUFFER_TOO_SMALL),
    ("read: one byte short", READ, P.read_events_request(wait=True), P.read_events_out_len(1) - 1,
     S.STATUS_BUFFER_TOO_SMALL),
    ("read: output 47", READ, P.read_events_request(), 47, S.STATUS_BUFFER_TOO_SMALL),
    # Other transfer methods or access bits of the function: not wfpmon's codes.
    ("read: METHOD_NEITHER", P.ctl_code(P.FILE_DEVICE_WFPMON, 0x903, 3, 1), P.read_events_request(), OK_READ_OUT,
     S.STATUS_INVALID_DEVICE_REQUEST),
    ("read: METHOD_IN_DIRECT", P.ctl_code(P.FILE_DEVICE_WFPMON, 0x903, 1, 1), P.read_events_request(), OK_READ_OUT,
     S.STATUS_INVALID_DEVICE_REQUEST),
    ("read: write access", P.ctl_code(P.FILE_DEVICE_WFPMON, 0x903, 0, 3), P.read_events_request(), OK_READ_OUT,
     S.STATUS_INVALID_DEVICE_REQUEST),
    # LIST_PROCESSES (16-byte request).
    ("list: no input", LIST, b"", OK_LIST_OUT, S.STATUS_INVALID_BUFFER_SIZE),
    ("list: header only", LIST, P.list_processes_request()[:8], OK_LIST_OUT, S.STATUS_INVALID_BUFFER_SIZE),
    ("list: 15 bytes", LIST, P.list_processes_request()[:15], OK_LIST_OUT, S.STATUS_INVALID_BUFFER_SIZE),
    ("list: 17 bytes", LIST, P.list_processes_request() + b"\0", OK_LIST_OUT, S.STATUS_INVALID_BUFFER_SIZE),
    ("list: a read request", LIST, P.read_events_request(), OK_LIST_OUT, S.STATUS_INVALID_BUFFER_SIZE),
    ("list: 64 KiB", LIST, P.list_processes_request() + bytes(65536 - 16), 65536, S.STATUS_INVALID_BUFFER_SIZE),
    ("list: version 4", LIST, with_version(P.list_processes_request(), P.VERSION - 1), OK_LIST_OUT, S.STATUS_REVISION_MISMATCH),
    ("list: version 0xFFFFFFFF", LIST, with_version(P.list_processes_request(), 0xFFFFFFFF), OK_LIST_OUT,
     S.STATUS_REVISION_MISMATCH),
    ("list: header size 15", LIST, with_size(P.list_processes_request(), 15), OK_LIST_OUT,
     S.STATUS_INVALID_PARAMETER),
    ("list: header size 24", LIST, with_size(P.list_processes_request(), 24), OK_LIST_OUT,
     S.STATUS_INVALID_PARAMETER),
    ("list: cursor 1024", LIST, P.list_processes_request(0, 1024), OK_LIST_OUT, S.STATUS_INVALID_PARAMETER),
    ("list: cursor 0xFFFFFFFF", LIST, P.list_processes_request(5, 0xFFFFFFFF), OK_LIST_OUT,
     S.STATUS_INVALID_PARAMETER),
    ("list: no output", LIST, P.list_processes_request(), 0, S.STATUS_BUFFER_TOO_SMALL),
    ("list: header-size output", LIST, P.list_processes_request(), P.PROCESS_LIST_HEADER_SIZE,
     S.STATUS_BUFFER_TOO_SMALL),
    ("list: one byte short", LIST, P.list_processes_request(), P.list_processes_out_len(1) - 1,
     S.STATUS_BUFFER_TOO_SMALL),
    ("list: METHOD_OUT_DIRECT", P.ctl_code(P.FILE_DEVICE_WFPMON, 0x904, 2, 1), P.list_processes_request(),
     OK_LIST_OUT, S.STATUS_INVALID_DEVICE_REQUEST),
    # The next function code is nobody's.
    ("function 0x905", P.ctl_code(P.FILE_DEVICE_WFPMON, 0x905, 0, 1), P.list_processes_request(), OK_LIST_OUT,
     S.STATUS_INVALID_DEVICE_REQUEST),
]


def snapshot(e):
    """What a bad request must not change: every event held (and the next
    cursor), every process and flow, the statistics."""
    events, dropped, _ = all_events(e)
    procs = processes_by_identity(e)
    return dict(events=events, dropped=dropped, processes=procs, flows=flows_by_id(e), stats=stats(e))


@pytest.fixture
def busy(loaded):
    """A driver with history: flows (one ended), processes, events, and a
    reader on another handle with a read pending."""
    e = loaded
    establish(e, 0x1, pid=10, path=EDGE)
    establish(e, 0x2, family=6, protocol=17, pid=11)
    e.stream(0x1, 700, send=True)
    e.datagram(0x2, [40], inbound=True)
    e.end_flow(0x2)
    reader = e.open_handle()
    e.pending_read = pend_read(e, reader, 3)
    return e


def test_malformed_requests_get_their_precise_status_and_change_nothing(busy):
    """Each case in turn, on one driver with history: answered at once
    (never pended, even with READ_EVENTS_WAIT) with its status and nothing
    written back; afterwards nothing of the driver's state differs, the
    other reader's read is still pending, and the next event is still the
    next one (nothing consumed)."""
    e = busy
    before = snapshot(e)
    for name, code, data, out_len, expected in CASES:
        rec = e.send_irp_async(DEVICE_CONTROL, code, data, out_len)
        assert not rec.pending and not e.marked_pending(rec), name
        assert [(c.status, c.information, c.output) for c in rec.completions] == [(expected, 0, b"")], name
        assert snapshot(e) == before, name
        assert not e.pending_read.completed and e.pending_read.queued, name
    establish(e, 0x3, pid=12)
    out = completed_events(e.pending_read)
    assert [(ev["seq"], ev["flow_id"]) for ev in out["events"]] == [(3, 0x3)]
    assert e.pool_errors == [] and e.irp_errors() == []


def test_the_largest_counts_are_capped_not_refused(busy):
    """max_events / max_entries of 0xFFFFFFFF are valid: the answer holds
    what fits, at most 256 events / 64 processes."""
    e = busy
    status, info, raw = ioctl(e, READ, P.read_events_request(0xFFFFFFFF, 0), 1 << 16)
    page = P.parse_events(raw)
    assert (status, page["returned"], page["next"]) == (0, 3, 3)
    status, info, raw = ioctl(e, LIST, P.list_processes_request(0xFFFFFFFF, 1023), 1 << 16)
    assert status == 0 and P.parse_processes(raw)["returned"] <= 1


def oracle(code, data, out_len):
    """The documented rules of crates/wfpmon-core/src/protocol.rs, in the
    order they are checked: code, input size, version, header size, fields,
    output size. Returns the status, or "ok" for a valid request."""
    size = {READ: P.READ_EVENTS_REQUEST_SIZE, LIST: P.LIST_PROCESSES_REQUEST_SIZE}.get(code)
    if size is None:
        return S.STATUS_INVALID_DEVICE_REQUEST
    if len(data) != size:
        return S.STATUS_INVALID_BUFFER_SIZE
    version, header_size = struct.unpack_from("<II", data)
    if version != P.VERSION:
        return S.STATUS_REVISION_MISMATCH
    if header_size != size:
        return S.STATUS_INVALID_PARAMETER
    if code == READ:
        _, flags, _ = struct.unpack_from("<IIQ", data, 8)
        if flags & ~P.READ_EVENTS_WAIT:
            return S.STATUS_INVALID_PARAMETER
        return "ok" if out_len >= P.read_events_out_len(1) else S.STATUS_BUFFER_TOO_SMALL
    _, slot = struct.unpack_from("<II", data, 8)
    if slot >= P.PROCESS_SLOTS:
        return S.STATUS_INVALID_PARAMETER
    return "ok" if out_len >= P.list_processes_out_len(1) else S.STATUS_BUFFER_TOO_SMALL


def random_request(rng, code):
    size = P.READ_EVENTS_REQUEST_SIZE if code == READ else P.LIST_PROCESSES_REQUEST_SIZE
    length = rng.choice([size] * 6 + [0, rng.randrange(1, 40), rng.randrange(1, 40), 65536])
    data = bytearray(rng.randbytes(length))
    if length >= 8 and rng.random() < 0.9:
        data[0:4] = struct.pack("<I", P.VERSION)
        if rng.random() < 0.9:
            data[4:8] = struct.pack("<I", size)
    if length == size and rng.random() < 0.5:
        if code == READ:
            data[12:16] = struct.pack("<I", rng.choice([0, 1]))
            data[16:24] = struct.pack("<Q", rng.choice([0, 1, 3, 4, P.FROM_NOW, rng.getrandbits(64)]))
        else:
            data[12:16] = struct.pack("<I", rng.choice([0, 1, 1023, 1024, rng.getrandbits(32)]))
    out_len = rng.choice([0, 1, 47, 48, 55, 56, P.read_events_out_len(1), P.list_processes_out_len(1) - 1,
                          P.list_processes_out_len(1), P.list_processes_out_len(2), 65536])
    return bytes(data), out_len


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_requests_match_the_oracle(busy, seed):
    """Random requests (random bytes, near-valid headers, odd sizes and
    outputs) for both codes: each one is answered exactly as the oracle
    says; valid ones are well-formed answers (a waiting read with nothing
    to read pends, and is then cancelled); the driver's state and the
    other reader's pending read are untouched throughout."""
    e = busy
    rng = random.Random(seed)
    before = snapshot(e)
    answered = {}
    others = {P.IOCTL_QUERY_STATS, P.IOCTL_LIST_FLOWS, P.IOCTL_SET_COUNTING}  # protocol 3's own
    for _ in range(200):
        code = rng.choice([READ, LIST, P.ctl_code(P.FILE_DEVICE_WFPMON, rng.randrange(0x900, 0x910),
                                                  rng.randrange(4), rng.randrange(4))])
        if code in others:
            continue
        data, out_len = random_request(rng, code)
        expected = oracle(code, data, out_len)
        rec = e.send_irp_async(DEVICE_CONTROL, code, data, out_len)
        answered[expected] = answered.get(expected, 0) + 1
        if expected != "ok":
            assert [(c.status, c.information, c.output) for c in rec.completions] == [(expected, 0, b"")], \
                (hex(code), data[:32].hex(), out_len)
            continue
        if rec.pending and not rec.completed:
            # A waiting read at or beyond the newest event: cancelled by
            # its requester.
            assert code == READ and e.cancel_irp(rec.irp)
            assert [(c.status, c.information) for c in rec.completions] == [(L.STATUS_CANCELLED, 0)]
            continue
        assert len(rec.completions) == 1 and rec.status == L.STATUS_SUCCESS
        if code == READ:
            page = P.parse_events(rec.output)
            assert page["returned"] <= min(3, (out_len - P.EVENTS_HEADER_SIZE) // P.EVENT_SIZE)
        else:
            page = P.parse_processes(rec.output)
            assert page["returned"] <= min(2, (out_len - P.PROCESS_LIST_HEADER_SIZE) // P.PROCESS_ENTRY_SIZE)
    assert snapshot(e) == before
    assert not e.pending_read.completed and e.pending_read.queued
    print(f"\nseed {seed}: {sorted((str(k), n) for k, n in answered.items())}")
    assert answered.get("ok", 0) > 0 and len(answered) >= 5, answered
    assert e.pool_errors == [] and e.irp_errors() == [f"IRP {e.pending_read.irp:#x} (major 0xe, code "
                                                      f"{READ:#x}) completed 0 times"]
