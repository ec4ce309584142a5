"""Flow events of the real wfpmon.sys (IOCTL_WFPMON_READ_EVENTS): what they
say, the ring that holds them, the cursors that read them, and the
inverted-call reads that pend in the cancel-safe queue until an event
exists — completed by the next event, by IRP_MJ_CLEANUP of their handle,
by IoCancelIrp, or by Unload's teardown, each exactly once."""

import time

import protocol as P
import wfp_layout as L
from client import (DEVICE_CONTROL, V6_LOCAL, all_events, completed_events, establish, flow_args,
                    flows_by_id, ioctl, pend_read, pended_cursor, processes_by_identity, read_events)
from conftest import FakeEngine

SECOND = 10_000_000  # 100 ns units
FIREFOX = "\\device\\harddiskvolume3\\program files\\mozilla firefox\\firefox.exe"
SVCHOST = "\\device\\harddiskvolume3\\windows\\system32\\svchost.exe"


def assert_clean(e):
    """No broken rule, every request completed exactly once, none queued."""
    assert e.pool_errors == []
    assert e.irp_errors() == []
    assert all(queue == [] for queue in e.csqs.values())


def test_events_in_order_with_exact_final_counters(loaded):
    """Known traffic on four flows (TCP and UDP, IPv4 and IPv6, two
    processes): one "established" event per flow when it starts (counters
    zero), one "ended" event with its final counters when it ends, in the
    order they happened, each with the flow's identity, process id and
    process key, on the driver's interrupt-time clock (the simulated one):
    duration = end - establishment, exactly."""
    e = loaded
    e.advance_clock(5 * SECOND)
    est, end = {}, {}
    a, b, c, d = 0xA1, 0xB2, 0xC3, 0xD4
    establish(e, a, family=4, protocol=6, pid=4100, path=FIREFOX)
    est[a] = e.clock
    e.advance_clock(SECOND // 2)
    establish(e, b, family=6, protocol=17, pid=1200, path=SVCHOST, direction=L.FWP_DIRECTION_INBOUND)
    est[b] = e.clock
    e.advance_clock(1234)
    establish(e, c, family=6, protocol=6, pid=4100, path=FIREFOX)
    est[c] = e.clock
    establish(e, d, family=4, protocol=17, pid=1200, path=SVCHOST)
    est[d] = e.clock
    for n in (1000, 460):
        e.stream(a, n, send=True)
    e.stream(a, 2000, send=False)
    e.datagram(b, [100, 200], inbound=True)
    e.datagram(b, [8 + 50], inbound=False, header_size=8)
    e.stream(c, 1, send=True)
    e.datagram(d, [8 + 512] * 3, inbound=False, header_size=8)
    e.datagram(d, [64], inbound=True)
    traffic = {a: (2000, 1460, 1, 2), b: (300, 50, 2, 1), c: (0, 1, 0, 1), d: (64, 1536, 1, 3)}
    e.advance_clock(2 * SECOND)
    e.end_flow(a)
    end[a] = e.clock
    e.advance_clock(7)
    e.end_flow(d)
    end[d] = e.clock
    e.advance_clock(SECOND)
    e.end_flow(b)
    end[b] = e.clock
    e.advance_clock(3)

    keys = {ident: p["key"] for ident, p in processes_by_identity(e).items()}
    assert set(keys) == {(4100, FIREFOX), (1200, SVCHOST)}
    owner = {a: (4100, FIREFOX), b: (1200, SVCHOST), c: (4100, FIREFOX), d: (1200, SVCHOST)}
    events, dropped, _ = all_events(e)
    assert dropped == 0
    expected = [(P.EVENT_ESTABLISHED, f) for f in (a, b, c, d)] + [(P.EVENT_ENDED, f) for f in (a, d, b)]
    assert [(ev["kind"], ev["flow_id"]) for ev in events] == expected
    assert [ev["seq"] for ev in events] == list(range(7))
    identity = {
        a: (2, 6, bytes([10, 0, 0, 1]) + bytes(12), 0, L.FWP_DIRECTION_OUTBOUND),
        b: (23, 17, V6_LOCAL, 0, L.FWP_DIRECTION_INBOUND),
        c: (23, 6, V6_LOCAL, 0, L.FWP_DIRECTION_OUTBOUND),
        d: (2, 17, bytes([10, 0, 0, 1]) + bytes(12), 0, L.FWP_DIRECTION_OUTBOUND),
    }
    for ev in events:
        f = ev["flow_id"]
        family, protocol, local, _, direction = identity[f]
        args, _ = flow_args(f, family=4 if family == 2 else 6, protocol=protocol)
        remote = (args[5].to_bytes(4, "big") + bytes(12)) if family == 2 else args[5]
        assert (ev["family"], ev["protocol"], ev["local"], ev["remote"], ev["direction"]) == \
            (family, protocol, local, remote, direction)
        assert (ev["local_port"], ev["remote_port"]) == (args[4], 443)
        assert (ev["process_id"], ev["process_key"]) == (owner[f][0], keys[owner[f]])
        assert (ev["flags"], ev["reserved"]) == (0, 0)
        assert ev["established"] == est[f]
        counters = (ev["bytes_inbound"], ev["bytes_outbound"], ev["packets_inbound"], ev["packets_outbound"])
        if ev["kind"] == P.EVENT_ESTABLISHED:
            assert (ev["time"], ev["duration"], counters) == (est[f], 0, (0, 0, 0, 0))
        else:
            assert (ev["time"], ev["duration"]) == (end[f], end[f] - est[f])
            assert counters == traffic[f]
    # The response's clock is the events' clock.
    page = read_events(e, 7)
    assert (page["returned"], page["next"], page["oldest"], page["now"]) == (0, 7, 0, e.clock)
    # The flow still active carries the same process key in the flow list.
    assert flows_by_id(e)[c]["process_key"] == keys[(4100, FIREFOX)]
    e.unload()
    assert_clean(e)


def overflow_flows(n, first=0):
    """Flows for the ring tests: flow i has local port 1024 + i, process
    5000 + i % 97 (with its own path), and one of 64 flow handles (the
    engine reuses the handles of flows that ended; few handles keep the
    number of registry buckets ever used — which listing and unload walk —
    small, so the emulator spends its time on the events)."""
    out = []
    for i in range(first, first + n):
        args, kwargs = flow_args(0x100000 + i % 64, family=4 if i % 2 else 6, protocol=6 if i % 3 else 17,
                                 pid=5000 + i % 97, path=f"\\device\\harddiskvolume1\\app{i % 97}.exe",
                                 local_port=1024 + i)
        out.append((args, kwargs))
    return out


def check_overflow_event(ev, seq, keys):
    """Event `seq` of the overflow run: flow seq // 2, established then
    ended, every field as written."""
    i = seq // 2
    args, kwargs = overflow_flows(1, i)[0]
    assert ev["seq"] == seq
    assert ev["kind"] == (P.EVENT_ESTABLISHED if seq % 2 == 0 else P.EVENT_ENDED), seq
    assert (ev["flow_id"], ev["local_port"]) == (0x100000 + i % 64, 1024 + i)
    assert ev["process_id"] == 5000 + i % 97
    assert ev["process_key"] == keys[(5000 + i % 97, kwargs["path"])]
    assert (ev["family"], ev["protocol"]) == ((2 if i % 2 else 23), (6 if i % 3 else 17))
    assert (ev["remote_port"], ev["flags"], ev["direction"]) == (443, 0, L.FWP_DIRECTION_OUTBOUND)
    remote = args[5].to_bytes(4, "big") + bytes(12) if i % 2 else args[5]
    assert ev["remote"] == remote


def test_the_ring_overflows_oldest_first_with_exact_dropped_counts(loaded):
    """More events than the ring holds (16384): the oldest are overwritten.
    A reader from the beginning is told exactly how many it lost, then gets
    every event still held — intact (each field as written) and contiguous;
    a reader that fell behind loses exactly what was overwritten after its
    cursor; one whose cursor is still held loses nothing."""
    e = loaded
    overflow = 1000
    total = P.EVENT_CAPACITY + overflow  # events: two per flow
    started = time.monotonic()
    e.churn(overflow_flows(50))
    behind = read_events(e, 0, max_events=60)
    assert (behind["returned"], behind["next"], behind["dropped"]) == (60, 60, 0)
    e.churn(overflow_flows(total // 2 - 50, 50))
    churn_s = time.monotonic() - started
    print(f"\n{total} events from {total // 2} flows in {churn_s:.1f} s "
          f"({1000 * churn_s / (total // 2):.2f} ms per flow established and ended)")
    keys = {ident: p["key"] for ident, p in processes_by_identity(e).items()}
    assert len(keys) == 97

    # A new reader from the beginning.
    first = read_events(e, 0)
    assert (first["dropped"], first["oldest"], first["returned"]) == (overflow, overflow, 256)
    assert first["events"][0]["seq"] == overflow
    events, dropped, pages = all_events(e, 0)
    assert dropped == overflow
    assert len(events) == P.EVENT_CAPACITY and pages == P.EVENT_CAPACITY // 256 + 1
    for k, ev in enumerate(events):
        check_overflow_event(ev, overflow + k, keys)
    # The reader that stopped at 60 lost what was overwritten after it.
    late = read_events(e, behind["next"])
    assert (late["dropped"], late["oldest"], late["events"][0]["seq"]) == (overflow - 60, overflow, overflow)
    # A cursor still held loses nothing.
    held = read_events(e, 5000, max_events=3)
    assert (held["dropped"], [ev["seq"] for ev in held["events"]], held["next"]) == (0, [5000, 5001, 5002], 5003)
    # The newest event is the last flow's end; nothing after it.
    tail = read_events(e, total - 1)
    assert [ev["seq"] for ev in tail["events"]] == [total - 1] and tail["next"] == total
    assert read_events(e, total)["returned"] == 0
    e.unload()
    assert_clean(e)


def test_cursors_from_now_beyond_the_head_and_in_pages(loaded):
    """Cursor semantics: FROM_NOW and any cursor beyond the newest event
    mean "from the next event written" (a non-waiting read returns nothing
    and the cursor to continue with); a waiting one pends with that
    cursor, written back into its request, and gets exactly the next
    event. max_events and the output size bound a page; pages continue
    exactly where the last one stopped."""
    e = loaded
    e.churn([flow_args(0x10 + i, pid=77) for i in range(5)])  # 10 events
    now = read_events(e, P.FROM_NOW)
    assert (now["returned"], now["next"], now["dropped"]) == (0, 10, 0)
    beyond = read_events(e, 10 + 1000)
    assert (beyond["returned"], beyond["next"], beyond["dropped"]) == (0, 10, 0)
    # Pages: max_events, then the output size, limit each page.
    page = read_events(e, 0, max_events=4)
    assert [ev["seq"] for ev in page["events"]] == [0, 1, 2, 3] and page["next"] == 4
    page = read_events(e, page["next"], capacity=3)
    assert [ev["seq"] for ev in page["events"]] == [4, 5, 6] and page["next"] == 7
    page = read_events(e, page["next"])
    assert [ev["seq"] for ev in page["events"]] == [7, 8, 9] and page["next"] == 10
    # An output with room for 3 events and a stray 127 bytes returns 3.
    status, info, raw = ioctl(e, P.IOCTL_READ_EVENTS, P.read_events_request(0, 0),
                              P.read_events_out_len(3) + 127)
    assert (status, info, P.parse_events(raw)["returned"]) == (0, P.read_events_out_len(3), 3)
    # Waiting reads: from now, and from beyond the head.
    h = e.open_handle()
    from_now = pend_read(e, h, P.FROM_NOW)
    from_beyond = pend_read(e, h, 10 + 5)
    assert pended_cursor(e, from_now) == pended_cursor(e, from_beyond) == 10
    # A waiting read whose cursor is behind the head does not pend.
    rec = e.send_irp_async(DEVICE_CONTROL, P.IOCTL_READ_EVENTS, P.read_events_request(0, 8, wait=True),
                           P.read_events_out_len(16), h)
    assert not rec.pending and [ev["seq"] for ev in completed_events(rec)["events"]] == [8, 9]
    establish(e, 0x99, pid=78)
    for rec in (from_now, from_beyond):
        out = completed_events(rec)
        assert [(ev["seq"], ev["flow_id"], ev["kind"]) for ev in out["events"]] == [(10, 0x99, P.EVENT_ESTABLISHED)]
        assert (out["next"], out["dropped"]) == (11, 0)
    e.unload()
    assert_clean(e)


def test_a_pending_read_is_completed_by_the_next_event_with_that_event(loaded):
    """The inverted call: a waiting read with nothing after its cursor pends
    (STATUS_PENDING, marked pending, in the cancel-safe queue, its cursor
    written back); the next event — here a flow established at
    DISPATCH_LEVEL by the flow-established classify, then that flow's end
    from its flowDeleteFn — completes every pending read with that event,
    once."""
    e = loaded
    h = e.open_handle()
    first = pend_read(e, h, 0)
    second = pend_read(e, h, 0)
    assert pended_cursor(e, first) == 0
    e.advance_clock(SECOND)
    establish(e, 0x51, pid=321, path=FIREFOX)
    for rec in (first, second):
        out = completed_events(rec)
        assert [(ev["seq"], ev["kind"], ev["flow_id"]) for ev in out["events"]] == [(0, P.EVENT_ESTABLISHED, 0x51)]
        assert (out["next"], out["dropped"], out["now"]) == (1, 0, e.clock)
        assert rec.completions[0].irql == e.CALLOUT_IRQL, "completed from the classify itself"
    again = pend_read(e, h, 1)
    e.advance_clock(3 * SECOND)
    e.end_flow(0x51)
    out = completed_events(again)
    (ev,) = out["events"]
    assert (ev["seq"], ev["kind"], ev["duration"]) == (1, P.EVENT_ENDED, 3 * SECOND)
    # Only pending reads are touched: nothing happens to completed ones.
    establish(e, 0x52, pid=321)
    assert [len(r.completions) for r in (first, second, again)] == [1, 1, 1]
    e.close_handle(h)
    e.unload()
    assert_clean(e)


def test_closing_a_handle_cancels_its_reads_only(loaded):
    """IRP_MJ_CLEANUP (the last handle of a file object closed) completes
    that file object's pending reads as STATUS_CANCELLED — another handle's
    read stays pending, and is completed later by an event."""
    # Shows rule K24.
    e = loaded
    mine, other = e.open_handle(), e.open_handle()
    reads = [pend_read(e, mine), pend_read(e, other), pend_read(e, mine)]
    e.close_handle(mine)
    for rec in (reads[0], reads[2]):
        assert [(c.status, c.information, c.output) for c in rec.completions] == [(L.STATUS_CANCELLED, 0, b"")]
    assert not reads[1].completed and reads[1].queued
    establish(e, 0x61, pid=9)
    assert [ev["flow_id"] for ev in completed_events(reads[1])["events"]] == [0x61]
    e.close_handle(other)
    e.unload()
    assert_clean(e)


def test_io_cancel_irp_cancels_one_read(loaded):
    """IoCancelIrp (CancelIoEx, a thread exiting) calls the cancel routine
    the cancel-safe queue installed: the driver's CsqRemoveIrp and
    CsqCompleteCanceledIrp end that read as STATUS_CANCELLED; the other
    read stays pending. Cancelling an IRP the driver already completed is
    not possible (it is not cancelable any more): IoCancelIrp returns
    FALSE and nothing is completed twice."""
    # Shows rules K17 and K21.
    e = loaded
    h = e.open_handle()
    a, b = pend_read(e, h), pend_read(e, h)
    assert e.cancel_irp(a.irp) is True
    assert [(c.status, c.information) for c in a.completions] == [(L.STATUS_CANCELLED, 0)]
    assert not b.completed and b.queued
    establish(e, 0x71, pid=9)
    assert completed_events(b)["returned"] == 1
    e.close_handle(h)
    e.unload()
    assert_clean(e)


def test_a_read_whose_cancellation_is_under_way_is_left_to_its_cancel_routine(loaded):
    """IoCancelIrp on another processor has set the cancel bit and taken the
    cancel routine, but the routine has not yet locked the queue when an
    event arrives: IoCsqRemoveNextIrp passes that read over (it "only
    returns IRPs that have not yet been canceled"), the event completes the
    other read, and the cancel routine then completes the first as
    cancelled — each exactly once."""
    # Shows rule K20: an IRP being cancelled is passed over.
    e = loaded
    h = e.open_handle()
    cancelling, waiting = pend_read(e, h), pend_read(e, h)
    routine = e.begin_cancel(cancelling.irp)
    assert routine == e.CSQ_CANCEL_ROUTINE
    establish(e, 0x81, pid=9)
    assert not cancelling.completed and cancelling.queued
    assert [ev["flow_id"] for ev in completed_events(waiting)["events"]] == [0x81]
    e.finish_cancel(cancelling.irp, routine)
    assert [(c.status, c.information) for c in cancelling.completions] == [(L.STATUS_CANCELLED, 0)]
    e.close_handle(h)
    e.unload()
    assert_clean(e)


def test_a_read_cancelled_before_it_is_queued(loaded):
    """A request whose cancel bit is already set when the driver queues it
    (its thread exited meanwhile): IoCsqInsertIrp does not insert it and
    hands it to CsqCompleteCanceledIrp; the dispatch routine still returns
    STATUS_PENDING (the IRP was marked pending), and the request is
    completed once, as cancelled."""
    # Shows rule K19: a cancelled IRP is not inserted.
    e = loaded
    h = e.open_handle()
    rec = e.make_irp(DEVICE_CONTROL, P.IOCTL_READ_EVENTS, P.read_events_request(0, P.FROM_NOW, wait=True),
                     P.read_events_out_len(4), file_object=h)
    e.se.mem_write(rec.irp + e.IRP_CANCEL, b"\x01")
    e.dispatch(rec)
    assert rec.pending and e.marked_pending(rec) and not rec.queued
    assert [(c.status, c.information) for c in rec.completions] == [(L.STATUS_CANCELLED, 0)]
    establish(e, 0x91, pid=9)
    assert len(rec.completions) == 1
    e.close_handle(h)
    e.unload()
    assert_clean(e)


def test_an_event_just_before_the_read_is_queued_is_not_lost(loaded):
    """The lost-wakeup race: another processor publishes an event after the
    read looked at the ring (nothing new) but before its IRP is in the
    queue — that publish finds no pending read to complete. The driver
    looks again once the read is queued and takes it back: the dispatch
    routine returns STATUS_PENDING (it was marked pending) and the read is
    already completed, with that event."""
    e = loaded
    establish(e, 0x40, pid=3)  # event 0
    h = e.open_handle()
    rec = e.make_irp(DEVICE_CONTROL, P.IOCTL_READ_EVENTS, P.read_events_request(0, P.FROM_NOW, wait=True),
                     P.read_events_out_len(4), file_object=h)

    def another_processor():
        fn, args, _ = e.establish_call(*flow_args(0x41, pid=4)[0])
        return [(fn, args)]

    e.interpose("IoCsqInsertIrp", another_processor, before=True)
    e.dispatch(rec)
    assert rec.pending and e.marked_pending(rec) and not rec.queued
    out = completed_events(rec)
    assert [(ev["seq"], ev["flow_id"]) for ev in out["events"]] == [(1, 0x41)]
    e.close_handle(h)
    e.unload()
    assert_clean(e)


def test_a_read_cancelled_as_soon_as_it_is_queued(loaded):
    """IoCancelIrp from another thread right after IoCsqInsertIrp released
    the queue's lock, while the dispatch routine is still running: the
    cancel routine completes it as cancelled; the dispatch routine still
    returns STATUS_PENDING; one completion."""
    e = loaded
    h = e.open_handle()
    rec = e.make_irp(DEVICE_CONTROL, P.IOCTL_READ_EVENTS, P.read_events_request(0, P.FROM_NOW, wait=True),
                     P.read_events_out_len(4), file_object=h)
    e.interpose("IoCsqInsertIrp", lambda: e._cancel(rec.irp))
    e.dispatch(rec)
    assert rec.pending and e.marked_pending(rec) and not rec.queued
    assert [(c.status, c.information) for c in rec.completions] == [(L.STATUS_CANCELLED, 0)]
    establish(e, 0x42, pid=4)
    assert len(rec.completions) == 1
    e.close_handle(h)
    e.unload()
    assert_clean(e)


def delete_index(e):
    return next(i for i, c in enumerate(e.calls) if c.api == "IoDeleteDevice")


def test_unload_cancels_pending_reads_before_deleting_the_device(loaded):
    """A handle open across unload with reads pending: teardown — after
    every callout is unregistered (no event can follow) and before
    IoDeleteDevice — completes them as STATUS_CANCELLED.

    (As far as we know Windows does not call a legacy driver's Unload
    while a handle to its device is open — the requests and handles hold
    references — so this is the driver's defensive path, which a failed
    DriverEntry also runs; the emulator calls Unload directly. We found
    no Microsoft reference page that states the deferral.)"""
    e = loaded
    h1, h2 = e.open_handle(), e.open_handle()
    reads = [pend_read(e, h1), pend_read(e, h2), pend_read(e, h1)]
    e.unload()
    last_unregister = max(i for i, c in enumerate(e.calls) if c.api == "FwpsCalloutUnregisterById0")
    for rec in reads:
        assert [(c.status, c.information) for c in rec.completions] == [(L.STATUS_CANCELLED, 0)]
        assert last_unregister < rec.completions[0].call_index < delete_index(e)
        assert rec.completions[0].irql == 0
    assert_clean(e)


def test_unload_with_flows_completes_pending_reads_with_the_unloading_events(loaded):
    """Flows tracked at unload: their contexts are removed (flowDeleteFn),
    each publishing an "ended" event flagged UNLOADING, which completes the
    pending read (with the first such event) before the device goes; a
    read that then pends again is cancelled by teardown."""
    e = loaded
    e.churn([flow_args(0x200 + i, pid=55) for i in range(3)], end=False)
    h = e.open_handle()
    read = pend_read(e, h, 3)
    e.unload()
    out = completed_events(read)
    assert read.completions[0].call_index < delete_index(e)
    assert [ev["kind"] for ev in out["events"]] == [P.EVENT_ENDED]
    assert out["events"][0]["flags"] == P.EVENT_FLAG_UNLOADING and out["events"][0]["seq"] == 3
    assert_clean(e)


def test_a_read_sent_after_teardown_began_is_not_pended(loaded):
    """Another thread's waiting read arriving while Unload tears down
    (after pending reads were completed, before the device is deleted) is
    answered at once — never queued, where nothing would complete it.
    (Defensive, like the test above: see its note on Unload and open
    handles.)"""
    e = loaded
    h = e.open_handle()
    late = e.make_irp(DEVICE_CONTROL, P.IOCTL_READ_EVENTS, P.read_events_request(0, P.FROM_NOW, wait=True),
                      P.read_events_out_len(4), file_object=h)
    e.interpose("IoCsqRemoveNextIrp", lambda: [e.dispatch_call(late)])
    e.unload()
    assert not e.marked_pending(late) and not late.queued
    assert len(late.completions) == 1 and late.completions[0].call_index < delete_index(e)
    out = completed_events(late)
    assert (out["returned"], out["next"]) == (0, 0)
    assert_clean(e)


def test_every_request_is_completed_exactly_once_through_a_mixed_run(image):
    """Reads of three handles pended, completed by events, cancelled by
    IoCancelIrp, by handle close, re-issued, with flows coming and going
    and a failed association (its "established" event answered by an
    "ended ... not tracked" one) — then unload: every IRP completed exactly
    once, none left queued, no rule broken, and each reader's events are
    contiguous."""
    e = FakeEngine(image, faults={"FwpsFlowAssociateContext0": {3: L.STATUS_UNSUCCESSFUL}})
    assert e.driver_entry() == 0
    handles = [e.open_handle() for _ in range(3)]
    cursors = {h: 0 for h in handles}
    seen = {h: [] for h in handles}
    reads = {h: pend_read(e, h, 0) for h in handles}

    def collect(h):
        rec = reads[h]
        if rec.completed and rec.status == L.STATUS_SUCCESS:
            out = completed_events(rec)
            seen[h] += [ev["seq"] for ev in out["events"]]
            cursors[h] = out["next"]
        return rec.completed

    flow = 0x300
    for step in range(12):
        if step % 3 == 0:
            establish(e, flow, pid=100 + step, path=SVCHOST)
            flow += 1
        elif step % 3 == 1 and e.context_of(flow - 1):
            e.end_flow(flow - 1)
        else:
            e.cancel_irp(reads[handles[step % 2]].irp)
        for h in handles:
            # A completed read is asked again from its cursor (at once
            # answered again while events are waiting), until one pends.
            while collect(h):
                reads[h] = e.send_irp_async(DEVICE_CONTROL, P.IOCTL_READ_EVENTS,
                                            P.read_events_request(0, cursors[h], wait=True),
                                            P.read_events_out_len(2), h)
    events, dropped, _ = all_events(e)
    assert dropped == 0
    # The failed association: "established", then at once "ended, not
    # tracked" (and no process entry left for a flow never tracked).
    failed = [ev for ev in events if ev["flow_id"] == 0x302]
    assert [(ev["kind"], ev["flags"]) for ev in failed] == \
        [(P.EVENT_ESTABLISHED, 0), (P.EVENT_ENDED, P.EVENT_FLAG_NOT_TRACKED)]
    assert failed[1]["seq"] == failed[0]["seq"] + 1
    e.close_handle(handles[2])
    e.unload()
    for h in handles:
        collect(h)
        # Cancelled reads were asked again from the same cursor: each
        # reader saw every event it waited for, once, in order.
        assert seen[h] == list(range(len(seen[h]))), seen[h]
        assert seen[h], "a reader got no event"
    assert max(len(seen[h]) for h in handles) == len(events)
    assert_clean(e)
