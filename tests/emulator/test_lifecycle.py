"""DriverEntry and Unload of the real wfpmon.sys against the fake engine:
the documented order, the rollback of every failable step, and the
BUSY → remove flow contexts → retry protocol of "Unloading a Callout Driver".
"""

import pytest

import wfp_layout as L
from conftest import CATALOG, KEYS, FakeEngine

SECURITY_APIS = ["ObOpenObjectByPointer", "ZwSetSecurityObject", "ZwClose"]
LIFECYCLE_APIS = (
    "IoCsqInitialize", "IoCreateDevice", *SECURITY_APIS, "FwpsCalloutRegister1",
    "FwpsInjectionHandleCreate0", "FwpsCalloutUnregisterById0", "FwpsFlowRemoveContext0",
    "IoCsqRemoveNextIrp", "IoDeleteDevice", "FwpsInjectionHandleDestroy0",
)
FILE_DEVICE_WFPMON = 0x8F4D  # vendor range ("Defining I/O Control Codes")
FILE_DEVICE_SECURE_OPEN = 0x100


def lifecycle(e):
    return [(c.api, c.args, c.ret) for c in e.api_sequence(*LIFECYCLE_APIS)]


def assert_nothing_left(e: FakeEngine):
    """After unload or a failed DriverEntry: nothing the engine or the kernel
    could still call or that is still allocated."""
    assert [c.key for c in e.callouts.values() if c.registered] == []
    assert e.contexts == {} and e.pending == []
    assert e.devices == set(), "device object not deleted"
    assert e.injection_handles == set(), "injection handle not destroyed"
    assert e.pool == {}, f"pool leak: {e.pool}"
    assert e.pool_errors == []
    assert e.handles == {}, f"kernel handles left open: {e.handles}"
    # The ETW provider goes last: after it, nothing of the driver may run.
    assert e.etw == {}, "ETW provider left registered (a bugcheck when a session enables it)"
    unregistered = [i for i, c in enumerate(e.calls) if c.api == "EtwUnregister"]
    if unregistered:
        assert unregistered == [max(i for i, c in enumerate(e.calls)
                                    if c.api not in ("EtwWriteTransfer", "ExFreePoolWithTag"))]
    assert len(e.deleted_devices) == len(set(e.deleted_devices)), "device deleted twice"
    assert len(e.destroyed_handles) == len(set(e.destroyed_handles)), "handle destroyed twice"
    # Every request sent was completed exactly once; none is left queued.
    assert e.irp_errors() == []
    assert all(queue == [] for queue in e.csqs.values()), "IRPs left in the cancel-safe queue"


def test_driver_entry_creates_device_registers_callouts_then_opens_injection(loaded):
    # Shows rules E1 and E15.
    seq = lifecycle(loaded)
    apis = [a for a, _, _ in seq]
    # The queue of pending event reads exists before the device can receive
    # a request.
    assert apis == (["IoCsqInitialize", "IoCreateDevice", *SECURITY_APIS]
                    + ["FwpsCalloutRegister1"] * 6 + ["FwpsInjectionHandleCreate0"])
    assert all(ret == 0 for _, _, ret in seq)
    assert seq[1][1] == ("\\Device\\WfpMon", FILE_DEVICE_WFPMON, FILE_DEVICE_SECURE_OPEN)
    ((csq,),) = [args for api, args, _ in seq if api == "IoCsqInitialize"]
    assert list(loaded.csqs) == [csq]
    # Static, non-paged: inside the image (it is touched at DISPATCH_LEVEL).
    assert loaded.module.base <= csq < loaded.module.base + loaded.module.image_size
    registered = [args[0] for api, args, _ in seq if api == "FwpsCalloutRegister1"]
    assert registered == [key for key, _ in CATALOG]
    assert loaded.unload_routine != 0, "DriverUnload not set"


def test_callouts_are_registered_with_the_documented_flags(loaded):
    for key, name in CATALOG:
        c = loaded.callout_by_key(key)
        assert c.classify != 0 and c.notify != 0
        # Every callout allows offloading (what wfpmon counts does not
        # depend on it; without the flag the engine disables NIC offloads for
        # all traffic its match-all filters see), and none claims USO/URO,
        # under which one NET_BUFFER may carry several datagrams.
        if "flow-established" in name:
            assert c.flags == L.FWP_CALLOUT_FLAG_ALLOW_OFFLOAD and c.flow_delete == 0, name
        else:
            # The data callouts hold flow contexts: conditional on flow, with
            # a flowDeleteFn to free them.
            assert c.flags == L.FWP_CALLOUT_FLAG_CONDITIONAL_ON_FLOW | L.FWP_CALLOUT_FLAG_ALLOW_OFFLOAD, name
            assert c.flow_delete != 0, name


def test_unload_follows_the_documented_order(loaded):
    before = len(lifecycle(loaded))
    loaded.unload()
    seq = lifecycle(loaded)[before:]
    apis = [a for a, _, _ in seq]
    # Pending event reads are completed (none here: the queue answers NULL)
    # after the last callout is gone and before the device is deleted.
    assert apis == (["FwpsCalloutUnregisterById0"] * 6
                    + ["IoCsqRemoveNextIrp", "IoDeleteDevice", "FwpsInjectionHandleDestroy0"])
    assert all(ret == 0 for _, _, ret in seq), seq
    # Flow-established callouts (which create contexts) go first.
    unregistered = [loaded.callouts[args[0]].key for api, args, _ in seq if api == "FwpsCalloutUnregisterById0"]
    assert unregistered == [key for key, _ in reversed(CATALOG)]
    assert_nothing_left(loaded)


FAILABLE = [
    ("IoCsqInitialize", 1),
    ("IoCreateDevice", 1),
    ("ObOpenObjectByPointer", 1),
    ("ZwSetSecurityObject", 1),
    ("ZwClose", 1),
    *[("FwpsCalloutRegister1", n) for n in range(1, 7)],
    ("FwpsInjectionHandleCreate0", 1),
]


@pytest.mark.parametrize("api,nth", FAILABLE, ids=[f"{a}#{n}" for a, n in FAILABLE])
def test_failure_at_each_step_rolls_back_everything(image, api, nth):
    # Shows rules K30 and K18: each failable call fails.
    status = 0xC0000017  # STATUS_NO_MEMORY: any error must come back unchanged
    e = FakeEngine(image, faults={api: {nth: status}})
    assert e.driver_entry() == status
    seq = lifecycle(e)
    apis = [a for a, _, _ in seq]
    fail_at = next(i for i, (a, _, r) in enumerate(seq) if a == api and r == status)
    done, undo = seq[:fail_at], seq[fail_at + 1:]
    registered = [args[0] for a, args, r in done if a == "FwpsCalloutRegister1" and r == 0]
    device_created = any(a == "IoCreateDevice" and r == 0 for a, _, r in done)
    # Exactly the completed steps are undone, in Unload's order (a handle
    # opened to set the DACL is closed even when setting it failed).
    expected = ["ZwClose"] if api == "ZwSetSecurityObject" else []
    expected += ["FwpsCalloutUnregisterById0"] * len(registered)
    # Once the driver is assembled (device secured), its teardown also ends
    # the event reads (none pending: one empty IoCsqRemoveNextIrp).
    assembled = api in ("FwpsCalloutRegister1", "FwpsInjectionHandleCreate0")
    expected += ["IoCsqRemoveNextIrp"] if assembled else []
    expected += ["IoDeleteDevice"] if device_created else []
    assert [a for a, _, _ in undo] == expected, apis
    unregistered = [e.callouts[args[0]].key for a, args, _ in undo if a == "FwpsCalloutUnregisterById0"]
    assert unregistered == list(reversed(registered))
    assert e.unload_routine == 0, "a failed DriverEntry must not leave an unload routine to call"
    if api == "ZwClose":
        # The close failed: the handle is still open. Report it (nothing
        # else may be left), and it must not have been closed twice.
        assert len(e.handles) == 1 and e.closed_handles == []
        e.handles.clear()
    assert_nothing_left(e)


def establish_many(e, count):
    """`count` flows through the real flow-established classifyFn, mixed
    TCP/UDP and IPv4/IPv6; returns their flow handles."""
    flows = []
    for i in range(count):
        v6 = i % 2 == 1
        tcp = i % 3 != 0
        key = KEYS["wfpmon-flow-established-v6" if v6 else "wfpmon-flow-established-v4"]
        local = bytes([0xfd] + [0] * 14 + [1]) if v6 else 0x0A000001
        remote = bytes([0xfd] + [0] * 13 + [i >> 8, i & 0xFF]) if v6 else 0x0A010000 + i
        handle = 0x5000 + i
        e.establish(key, 6 if v6 else 4, 6 if tcp else 17, local, 40000 + i, remote, 443,
                    L.FWP_DIRECTION_OUTBOUND, handle, 1000 + i)
        flows.append(handle)
    return flows


def test_flows_get_contexts_on_the_data_callout_of_their_family_and_protocol(loaded):
    flows = establish_many(loaded, 12)
    assert len(loaded.contexts) == 12
    layers = {L.FWPS_LAYER_STREAM_V4: "wfpmon-stream-v4", L.FWPS_LAYER_STREAM_V6: "wfpmon-stream-v6",
              L.FWPS_LAYER_DATAGRAM_DATA_V4: "wfpmon-datagram-v4",
              L.FWPS_LAYER_DATAGRAM_DATA_V6: "wfpmon-datagram-v6"}
    for i, handle in enumerate(flows):
        (flow, layer, cid), ctx = loaded.context_of(handle)
        v6, tcp = i % 2 == 1, i % 3 != 0
        name = f"wfpmon-{'stream' if tcp else 'datagram'}-{'v6' if v6 else 'v4'}"
        assert layers[layer] == name
        assert loaded.callouts[cid].key == KEYS[name]
        assert ctx in loaded.pool and loaded.pool[ctx][1] == int.from_bytes(b"WfpM", "little")


def test_unload_with_hundreds_of_flows_goes_busy_remove_retry(loaded):
    # Shows rules E2 and E8: busy, synchronous removals.
    establish_many(loaded, 300)
    assert len(loaded.contexts) == 300
    before = len(loaded.calls)
    loaded.unload()
    seq = [(c.api, c.args, c.ret) for c in loaded.calls[before:]
           if c.api in ("FwpsCalloutUnregisterById0", "FwpsFlowRemoveContext0")]
    # For each data callout: BUSY, one removal per flow of that callout, SUCCESS.
    i = 0
    per_callout = {}
    while i < len(seq):
        api, args, ret = seq[i]
        assert api == "FwpsCalloutUnregisterById0"
        cid = args[0]
        if ret == L.STATUS_DEVICE_BUSY:
            j = i + 1
            while j < len(seq) and seq[j][0] == "FwpsFlowRemoveContext0":
                assert seq[j][1][2] == cid and seq[j][2] == L.STATUS_SUCCESS
                j += 1
            per_callout[cid] = j - i - 1
            assert seq[j] == ("FwpsCalloutUnregisterById0", (cid,), L.STATUS_SUCCESS)
            i = j + 1
        else:
            assert ret == L.STATUS_SUCCESS
            i += 1
    assert sum(per_callout.values()) == 300
    assert len(per_callout) == 4
    assert len(loaded.flow_deletes) == 300
    assert_nothing_left(loaded)


def test_unload_waits_for_flow_deletions_that_are_pending(image):
    # Every third removal finds the flow mid-classify: STATUS_PENDING, and
    # flowDeleteFn runs later (when the driver waits).
    # Shows rule E9: deferred deletions.
    state = {"n": 0}

    def mode(flow, layer, cid):
        state["n"] += 1
        return "pending" if state["n"] % 3 == 0 else "sync"

    e = FakeEngine(image, remove_mode=mode)
    assert e.driver_entry() == 0
    establish_many(e, 90)
    e.unload()
    removes = [c.ret for c in e.calls if c.api == "FwpsFlowRemoveContext0"]
    assert removes.count(L.STATUS_PENDING) == 30 and removes.count(L.STATUS_SUCCESS) == 60
    assert e.waits >= 1, "the driver never waited for pending flow deletions"
    # The pending deletions ran before the device was deleted.
    last_wait = max(i for i, c in enumerate(e.calls) if c.api == "KeWaitForSingleObject")
    delete = next(i for i, c in enumerate(e.calls) if c.api == "IoDeleteDevice")
    assert last_wait < delete
    assert len(e.flow_deletes) == 90
    assert_nothing_left(e)


def test_flows_that_end_by_themselves_free_their_context(loaded):
    # Shows rule E11.
    flows = establish_many(loaded, 10)
    for handle in flows[:6]:
        loaded.end_flow(handle)
    assert len(loaded.contexts) == 4
    live = {ctx for ctx in loaded.contexts.values()}
    assert all(ctx in loaded.pool for ctx in live)
    assert len([a for a, (s, t) in loaded.pool.items() if t == int.from_bytes(b"WfpM", "little")]) == 4
    loaded.unload()
    assert_nothing_left(loaded)


def test_no_association_once_unload_has_begun(loaded):
    establish_many(loaded, 4)
    # While the driver unregisters its first callout, another processor
    # classifies a brand-new flow at the flow-established layer.
    key = KEYS["wfpmon-flow-established-v4"]
    late = {}

    def new_flow():
        fn, args, out = loaded.establish_call(key, 4, 6, 0x0A000001, 1, 0x0A000002, 2,
                                              L.FWP_DIRECTION_OUTBOUND, 0x9999, 7)
        late["out"] = out
        return [(fn, args)]

    loaded.interpose("FwpsCalloutUnregisterById0", new_flow)
    associations = len(loaded.api_sequence("FwpsFlowAssociateContext0"))
    loaded.unload()
    assert "out" in late
    assert len(loaded.api_sequence("FwpsFlowAssociateContext0")) == associations
    assert (0x9999, L.FWPS_LAYER_STREAM_V4) not in {(k[0], k[1]) for k in loaded.contexts}
    assert_nothing_left(loaded)


def test_callouts_work_before_driver_entry_finishes_and_failure_leaves_nothing(image):
    # Persistent filters may already reference the keys: the engine calls
    # the callouts as soon as they are registered. Here flows are classified
    # while DriverEntry is inside step 3, and step 3 then fails.
    # Shows rules E1 and K30: classifies right after registration.
    e = FakeEngine(image, faults={"FwpsInjectionHandleCreate0": {1: 0xC000009A}})
    key4 = KEYS["wfpmon-flow-established-v4"]

    def traffic():
        calls = []
        for i in range(5):
            fn, args, _ = e.establish_call(key4, 4, 17, 0x0A000001, 5000 + i, 0x08080808, 53,
                                           L.FWP_DIRECTION_OUTBOUND, 0x7000 + i, 42)
            calls.append((fn, args))
        return calls

    e.interpose("FwpsInjectionHandleCreate0", traffic)
    assert e.driver_entry() == 0xC000009A
    associated = [c for c in e.calls if c.api == "FwpsFlowAssociateContext0" and c.ret == 0]
    assert len(associated) == 5
    # Rollback had to remove those contexts before the callout would go.
    removed = [c for c in e.calls if c.api == "FwpsFlowRemoveContext0" and c.ret == 0]
    assert len(removed) == 5
    assert_nothing_left(e)


def test_flow_context_allocation_failure_is_counted_and_harmless(image):
    # Shows rule K30: the pool allocation fails.
    e = FakeEngine(image, faults={"ExAllocatePool2": {n: 0 for n in range(1, 1000)}})
    assert e.driver_entry() == 0
    out = e.establish(KEYS["wfpmon-flow-established-v4"], 4, 6, 1, 2, 3, 4,
                      L.FWP_DIRECTION_OUTBOUND, 0x1234, 1)
    assert out.actionType == L.FWP_ACTION_CONTINUE
    assert e.contexts == {}
    assert not e.api_sequence("FwpsFlowAssociateContext0")
    e.unload()
    assert_nothing_left(e)


def test_association_failure_frees_the_context(image):
    e = FakeEngine(image, faults={"FwpsFlowAssociateContext0": {1: L.STATUS_UNSUCCESSFUL}})
    assert e.driver_entry() == 0
    establish_many(e, 3)
    assert len(e.contexts) == 2
    e.unload()
    assert_nothing_left(e)


def test_a_flow_classified_twice_keeps_one_context(loaded):
    """FwpsFlowAssociateContext0 answers STATUS_OBJECT_NAME_EXISTS — a
    success-class status — when the flow already carries a context: the
    second record must be freed, not tracked."""
    # Shows rule E6: STATUS_OBJECT_NAME_EXISTS.
    key = KEYS["wfpmon-flow-established-v4"]
    for _ in range(2):
        loaded.establish(key, 4, 6, 1, 2, 3, 4, L.FWP_DIRECTION_OUTBOUND, 0x4242, 9)
    rets = [c.ret for c in loaded.api_sequence("FwpsFlowAssociateContext0")]
    assert rets == [0, 0x40000000]
    wfpm = int.from_bytes(b"WfpM", "little")
    assert [t for _, t in loaded.pool.values()].count(wfpm) == 1
    loaded.unload()
    assert_nothing_left(loaded)


def test_pending_deletions_that_complete_between_unregister_calls(image):
    """An engine whose other processor finishes the pending classify between
    two calls of the driver (not while it waits): the retry loop still gets
    every callout unregistered and every context freed."""
    # Shows rule E9.
    e = FakeEngine(image, remove_mode=lambda flow, layer, cid: "pending",
                   pending_runs_on="unregister")
    assert e.driver_entry() == 0
    establish_many(e, 40)
    e.unload()
    removes = [c.ret for c in e.calls if c.api == "FwpsFlowRemoveContext0"]
    assert removes == [L.STATUS_PENDING] * 40
    assert len(e.flow_deletes) == 40
    assert_nothing_left(e)


def test_unload_keeps_waiting_for_slow_pending_deletions(image):
    """Deletions that complete only after a dozen waits: the callout is
    unregistered before the device goes, and nothing is left."""
    # Shows rule E12.
    e = FakeEngine(image, remove_mode=lambda flow, layer, cid: "pending", pending_waits=12)
    assert e.driver_entry() == 0
    establish_many(e, 8)
    e.unload()
    assert e.waits >= 12
    first_delete = next(i for i, c in enumerate(e.calls) if c.api == "IoDeleteDevice")
    last_unregister = max(i for i, c in enumerate(e.calls) if c.api == "FwpsCalloutUnregisterById0")
    assert last_unregister < first_delete
    assert_nothing_left(e)


def test_a_removal_that_fails_is_asked_again(image):
    """FwpsFlowRemoveContext0 may answer "an error occurred" (any status
    other than SUCCESS, PENDING, UNSUCCESSFUL) and leave the context in
    place: the callout stays BUSY, so that flow must be asked again — once
    per retry, not never (which would hang unload) and not every flow every
    time (flows whose deletion is pending are not asked again)."""
    # Shows rule E10.
    failures = {"left": 3}

    def mode(flow, layer, cid):
        if flow == 0x5004 and failures["left"]:
            failures["left"] -= 1
            return L.STATUS_INSUFFICIENT_RESOURCES
        return "pending" if flow == 0x5001 else "sync"

    e = FakeEngine(image, remove_mode=mode, pending_waits=6)
    assert e.driver_entry() == 0
    establish_many(e, 12)
    e.unload()
    asked = [c.args[0] for c in e.calls if c.api == "FwpsFlowRemoveContext0"]
    assert asked.count(0x5004) == 4, "asked again after each error, until it went"
    assert asked.count(0x5001) <= 1 + 3, "a pending deletion is not asked every retry"
    (errors,) = {ev["values"]["FirstOtherStatus"] for ev in e.events_named("RemovalPass")
                 if ev["values"]["Other"]}
    assert errors == L.STATUS_INSUFFICIENT_RESOURCES
    assert_nothing_left(e)


def test_unregister_in_use_is_retried(image):
    """STATUS_FWP_IN_USE (another thread is unregistering the callout): wait
    and try again, for every callout."""
    # Shows rule E13.
    e = FakeEngine(image, faults={"FwpsCalloutUnregisterById0": {1: L.STATUS_FWP_IN_USE, 4: L.STATUS_FWP_IN_USE}})
    assert e.driver_entry() == 0
    establish_many(e, 6)
    e.unload()
    rets = [c.ret for c in e.api_sequence("FwpsCalloutUnregisterById0")]
    assert rets.count(L.STATUS_FWP_IN_USE) == 2
    assert_nothing_left(e)


def test_device_name_is_a_null_terminated_unicode_string(loaded):
    assert loaded.device_name == "\\Device\\WfpMon"
    assert loaded.device_name_terminated


def in_flight_flow(e, handle):
    """A flow-established classify of a new flow, running on another
    processor when unload unregisters the flow-established callout."""
    key = KEYS["wfpmon-flow-established-v4"]
    fn, args, out = e.establish_call(key, 4, 6, 0x0A000001, 1, 0x0A000002, 2,
                                     L.FWP_DIRECTION_OUTBOUND, handle, 7)
    e.classify_in_flight(e.callout_by_key(key).id, fn, args)
    return out


@pytest.mark.parametrize("barrier", ["wait", "busy"])
def test_unload_relies_on_the_engines_classify_barrier(image, barrier):
    """A flow-established classify still executing when unload begins: the
    engine's unregister does not succeed until it has returned (it waits,
    or answers busy until the driver's next wait lets it finish). The driver
    keeps no counter of its own: it retries BUSY, and that classify — which
    sees teardown under way — associates nothing."""
    # Shows rules E4 and E5 (the two barrier forms).
    e = FakeEngine(image, barrier=barrier)
    assert e.driver_entry() == 0
    establish_many(e, 6)
    associations = len(e.api_sequence("FwpsFlowAssociateContext0"))
    out = in_flight_flow(e, 0x9999)
    e.unload()
    assert e.barrier_completed == [e.callout_by_key(KEYS["wfpmon-flow-established-v4"]).id]
    assert e.read(L.FWPS_CLASSIFY_OUT0, out).actionType == L.FWP_ACTION_CONTINUE
    assert len(e.api_sequence("FwpsFlowAssociateContext0")) == associations
    v4 = e.callout_by_key(KEYS["wfpmon-flow-established-v4"]).id
    rets = [c.ret for c in e.api_sequence("FwpsCalloutUnregisterById0") if c.args[0] == v4]
    assert rets == ([L.STATUS_DEVICE_BUSY, L.STATUS_SUCCESS] if barrier == "busy" else [L.STATUS_SUCCESS])
    assert e.events_named("FlowRecordsLeft") == []
    assert_nothing_left(e)


def test_teardown_cost_per_flow_is_small_and_constant(loaded):
    """Unload with a thousand flows: a handful of kernel calls per flow (no
    per-flow logging, one event signal per callout rather than per flow),
    and locks taken a bounded number of times per bucket and flow."""
    establish_many(loaded, 1000)
    before = len(loaded.calls)
    locks_before = loaded.lock_acquisitions
    loaded.max_lock_depth = 0
    loaded.unload()
    teardown = loaded.calls[before:]
    others = [c for c in teardown if c.api not in ("KeAcquireInStackQueuedSpinLock",
                                                   "KeReleaseInStackQueuedSpinLock")]
    assert len(others) <= 4 * 1000, len(others)
    used_buckets = 1000  # at most one per flow
    locks = loaded.lock_acquisitions - locks_before
    # stop: one per used bucket; each callout's removal pass: one per used
    # bucket plus one per flow handed out; each flow deletion: its bucket's
    # lock, inside it its process's shard lock (the process's ended
    # totals), and the event ring's lock once (the "ended" event).
    assert locks <= (1 + 4) * used_buckets + 1000 + 3 * 1000, locks
    # Never more than the bucket -> shard nesting.
    assert loaded.max_lock_depth == 2
    sets = [c for c in loaded.api_sequence("KeSetEvent")]
    assert len(sets) <= 4, "the flow-delete callback signals once per callout"
    assert_nothing_left(loaded)


SECOND = 10_000_000  # 100 ns units
MINUTE = 60 * SECOND


def c_name(e, callout):
    return next(name for key, name in CATALOG if key == callout.key)


def assert_nothing_torn_down_before_the_last_unregister(e):
    last_unregister = max(i for i, c in enumerate(e.calls) if c.api == "FwpsCalloutUnregisterById0"
                          and c.ret == L.STATUS_SUCCESS)
    first_teardown = min(i for i, c in enumerate(e.calls)
                         if c.api in ("IoDeleteDevice", "FwpsInjectionHandleDestroy0"))
    assert last_unregister < first_teardown


def test_unload_waits_for_an_engine_that_holds_a_callout_for_ten_minutes(image):
    """"Unloading a Callout Driver": the unload function must not return
    before every callout is unregistered — there is no time-out to give up
    at. An engine that answers STATUS_FWP_IN_USE for ten simulated minutes
    is waited for; the waits back off (10 ms doubling to 1 s) so it costs a
    few hundred calls, and the log reports the wait on a backoff schedule
    (1 s, 3 s, 7 s, ... then every minute) instead of flooding."""
    # Shows rules E13 and K35: ten simulated minutes of STATUS_FWP_IN_USE.
    e = FakeEngine(image, in_use_until_100ns=10 * MINUTE)
    assert e.driver_entry() == 0
    establish_many(e, 6)
    e.unload()
    assert e.clock >= 10 * MINUTE, "Unload returned while the engine still held a callout"
    assert_nothing_torn_down_before_the_last_unregister(e)
    assert_nothing_left(e)
    timeouts = [t for t in e.wait_timeouts if t is not None]
    assert max(timeouts) == SECOND and min(timeouts) == SECOND // 100
    unregisters = e.api_sequence("FwpsCalloutUnregisterById0")
    assert len(unregisters) < 700, len(unregisters)
    reports = e.events_named("CalloutStillRegistered")
    # The first callout absorbs the ten minutes: reports at 1, 3, 7, 15, 31,
    # 63, 123, 183, ... 543 s (LogBackoff), each a Warning with the facts.
    seconds = [ev["values"]["ElapsedMs"] // 1000 for ev in reports]
    assert seconds[:7] == [1, 3, 7, 15, 31, 63, 123], seconds
    assert all(b - a == 60 for a, b in zip(seconds[6:], seconds[7:])), seconds
    assert all(ev["level"] == 3 and ev["values"]["LastStatus"] == L.STATUS_FWP_IN_USE for ev in reports)
    (done,) = [ev for ev in e.events_named("CalloutUnregistered")
               if ev["values"]["Callout"] == "wfpmon-flow-established-v6"]
    assert done["values"]["ElapsedMs"] >= 600_000


def test_unload_waits_for_deferred_flow_deletions_that_take_minutes(image):
    """Deferred flow deletions (classifies in progress) that complete only
    after three simulated minutes: the data callouts stay BUSY all that time
    and the driver keeps waiting; device and handle go only afterwards."""
    # Shows rules E12 and K35.
    e = FakeEngine(image, remove_mode=lambda flow, layer, cid: "pending",
                   pending_delay_100ns=3 * MINUTE)
    assert e.driver_entry() == 0
    establish_many(e, 24)
    e.unload()
    assert e.clock >= 3 * MINUTE
    assert len(e.flow_deletes) == 24
    assert_nothing_torn_down_before_the_last_unregister(e)
    assert_nothing_left(e)
    assert e.events_named("CalloutStillRegistered"), "the wait was never reported"
    passes = e.events_named("RemovalPass")
    assert sum(ev["values"]["Pending"] for ev in passes) == 24
    # A flow whose deletion is pending is not asked again on every retry:
    # only by the safety-net pass that follows each "still registered"
    # report (rare: 1, 3, 7 ... s, then once a minute).
    for c in e.callouts.values():
        removes = [x for x in e.calls if x.api == "FwpsFlowRemoveContext0" and x.args[2] == c.id]
        flows = len({x.args[0] for x in removes})
        reports = sum(ev["values"]["Callout"] == c_name(e, c) for ev in e.events_named("CalloutStillRegistered"))
        assert len(removes) in (flows * reports, flows * (1 + reports)), (c_name(e, c), len(removes), reports)


@pytest.mark.parametrize("barrier", ["wait", "busy"])
def test_unload_outlives_deletions_owed_after_the_engine_answers_not_found(image, barrier):
    """An engine that, after STATUS_DEVICE_BUSY and the removal of every
    context (each answered STATUS_PENDING, completing only after two
    simulated minutes), answers the next FwpsCalloutUnregisterById0 with
    STATUS_FWP_CALLOUT_NOT_FOUND while those flowDeleteFn calls are still to
    come. The driver must treat the answer as "let go", not as "nothing
    owed": it waits until it tracks no record of the callout (a record
    leaves only in flowDeleteFn), so the device and the injection handle go
    — and Unload returns — only after the last owed deletion; with a
    flow-established classify in flight (both barrier forms)."""
    # Shows rule E14.
    e = FakeEngine(image, remove_mode=lambda flow, layer, cid: "pending",
                   pending_delay_100ns=2 * MINUTE, barrier=barrier, not_found_while_owed=True)
    assert e.driver_entry() == 0
    establish_many(e, 24)
    in_flight_flow(e, 0x9999)
    e.unload()
    assert e.early_not_found >= 1, "the engine never answered NOT_FOUND with deletions owed"
    data = [c for c in e.callouts.values() if c.flow_delete and any(d[1] == c.id for d in e.flow_deletes)]
    for c in data:
        rets = [x.ret for x in e.calls if x.api == "FwpsCalloutUnregisterById0" and x.args[0] == c.id]
        assert rets[-1] == L.STATUS_FWP_CALLOUT_NOT_FOUND, (c_name(e, c), rets)
        # Once let go, the driver asks nothing more of the engine for it.
        assert rets.count(L.STATUS_FWP_CALLOUT_NOT_FOUND) == 1, rets
    assert len(e.flow_deletes) == 24
    assert e.clock >= 2 * MINUTE
    first_teardown = min(i for i, c in enumerate(e.calls)
                         if c.api in ("IoDeleteDevice", "FwpsInjectionHandleDestroy0"))
    assert len(e.deferred_delete_at) == 24
    assert max(e.deferred_delete_at) < first_teardown, "device or handle gone before an owed flowDeleteFn"
    released = e.events_named("CalloutReleasedWithFlowsOwed")
    assert {ev["values"]["Callout"] for ev in released} == {c_name(e, c) for c in data}
    assert all(ev["values"]["Status"] == L.STATUS_FWP_CALLOUT_NOT_FOUND for ev in released)
    assert e.events_named("FlowRecordsLeft") == []
    assert_nothing_left(e)
