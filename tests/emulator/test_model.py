"""The fake kernel's own checks fire: each rule the new models enforce
(IRP completion, spin locks and IRQL, the cancel-safe queue's use of the
driver's callbacks, the dispatch routine's pending protocol, the pool,
handle, device, wait and ETW ledgers, the engine's answers to unknown ids)
is broken on purpose here, by tiny guest functions or direct calls, and must
be reported. A check that cannot fire would let the driver tests pass
vacuously. Each test names the rules of docs/engine-rules.md it shows."""

import ctypes as C
import struct

import pytest

import protocol as P
import wfp_layout as L
from fake_engine import DISPATCH_LEVEL, PASSIVE_LEVEL, FakeEngine

RET = b"\xc3"
RET_ZERO = b"\x31\xc0\xc3"  # xor eax, eax; ret


def guest(e, code: bytes) -> int:
    addr = e.palloc(len(code))
    e.se.mem_write(addr, code)
    return addr


def returns(e, value: int) -> int:
    return guest(e, b"\x48\xb8" + struct.pack("<Q", value) + RET)  # mov rax, value; ret


@pytest.fixture
def e(image):
    return FakeEngine(image)


def read_irp(e):
    return e.make_irp(0x0E, P.IOCTL_READ_EVENTS, P.read_events_request(0, P.FROM_NOW, wait=True),
                      P.read_events_out_len(1))


def complete(e, rec, status=L.STATUS_SUCCESS):
    e.se.mem_write(rec.irp + e.IRP_IO_STATUS, struct.pack("<IIQ", status, 0, 0))
    e._complete_request(None, "IofCompleteRequest", None, [rec.irp, 0])


def test_an_irp_completed_twice_is_reported(e):
    # Shows rules K11 and K15: a second completion is reported.
    rec = read_irp(e)
    complete(e, rec)
    assert e.pool_errors == []
    complete(e, rec)
    assert any("completed twice" in m for m in e.pool_errors)
    assert e.irp_errors() == [f"IRP {rec.irp:#x} (major 0xe, code {P.IOCTL_READ_EVENTS:#x}) completed 2 times"]


def test_completing_a_queued_or_cancelable_irp_or_with_a_lock_held_is_reported(e):
    # Shows rules K10, K12 and K13 firing.
    rec = read_irp(e)
    rec.queued = True
    e.w64(rec.irp + e.IRP_CANCEL_ROUTINE, e.CSQ_CANCEL_ROUTINE)
    e._lock_acquire("KeAcquireSpinLockRaiseToDpc", 0x1000, "spin")
    complete(e, rec, L.STATUS_PENDING)
    text = " | ".join(e.pool_errors)
    for needle in ("still in the cancel-safe queue", "cancel routine set", "holding spin lock",
                   "with STATUS_PENDING"):
        assert needle in text, needle


def test_a_pending_irp_never_completed_is_reported(e):
    # Shows rule K15 firing.
    rec = read_irp(e)
    assert e.irp_errors() == [f"IRP {rec.irp:#x} (major 0xe, code {P.IOCTL_READ_EVENTS:#x}) completed 0 times"]


def test_spin_lock_rules_are_enforced(e):
    # Shows rules K2, K3, K4, K5 and K6 firing.
    e.irql = PASSIVE_LEVEL
    old = e._lock_acquire("KeAcquireSpinLockRaiseToDpc", 0xA0, "spin")
    assert (old, e.irql) == (PASSIVE_LEVEL, DISPATCH_LEVEL)
    e._lock_acquire("KeAcquireSpinLockRaiseToDpc", 0xA0, "spin")  # recursion
    assert any("already held" in m for m in e.pool_errors)
    e.pool_errors.clear()
    e.lock_stack.clear()
    e.irql = PASSIVE_LEVEL
    # Nesting A -> B, later B -> A: an inversion.
    e._lock_acquire("x", 0xA0, "spin")
    e._lock_acquire("x", 0xB0, "spin")
    e._lock_release("y", lambda entry: entry[0] == 0xB0, DISPATCH_LEVEL)
    e._lock_release("y", lambda entry: entry[0] == 0xA0, PASSIVE_LEVEL)
    assert e.pool_errors == [] and e.irql == PASSIVE_LEVEL
    e._lock_acquire("x", 0xB0, "spin")
    e._lock_acquire("x", 0xA0, "spin")
    assert any("order inversion" in m for m in e.pool_errors)
    e.pool_errors.clear()
    # Releasing the outer lock first drops the IRQL under a held lock; a
    # NewIrql other than the one the acquisition returned; a lock not held.
    e._lock_release("KeReleaseSpinLock", lambda entry: entry[0] == 0xB0, PASSIVE_LEVEL)
    assert any("IRQL lowered" in m for m in e.pool_errors)
    e.irql = DISPATCH_LEVEL
    e._lock_release("KeReleaseSpinLock", lambda entry: entry[0] == 0xA0, PASSIVE_LEVEL)
    assert any("NewIrql" in m for m in e.pool_errors)
    e._lock_release("KeReleaseSpinLock", lambda entry: entry[0] == 0xC0, PASSIVE_LEVEL)
    assert any("not held" in m for m in e.pool_errors)


def test_an_uninitialised_spin_lock_is_reported(e):
    # Shows rule K7 firing.
    lock = e.palloc(8)
    e.se.mem_write(lock, struct.pack("<Q", 1))
    e._spin_acquire(None, "KeAcquireSpinLockRaiseToDpc", None, [lock])
    assert any("not an initialised, free spin lock" in m for m in e.pool_errors)


def test_returning_to_the_system_with_a_lock_held_is_reported(e):
    # Shows rule K9 firing.
    def takes_a_lock_and_returns():
        e._lock_acquire("KeAcquireSpinLockRaiseToDpc", 0xD0, "spin")
        yield (guest(e, RET), [])
        return 0

    e.run_model(takes_a_lock_and_returns(), PASSIVE_LEVEL, "a callback")
    assert any("returned holding spin locks" in m for m in e.pool_errors)
    assert any("returned at IRQL 2" in m for m in e.pool_errors)


def csq_with(e, acquire, release, peek, insert=None, remove=None, complete=None):
    csq = e.palloc(e.IO_CSQ_SIZE)
    callbacks = [insert or guest(e, RET), remove or guest(e, RET), peek, acquire, release,
                 complete or guest(e, RET)]
    e._csq_initialize(None, "IoCsqInitialize", None, [csq, *callbacks])
    return csq


def test_csq_callbacks_that_do_not_lock_are_reported(e):
    """CsqAcquireLock / CsqReleaseLock that take and release no lock."""
    # Shows rule K23 firing (and K19: the insertion itself).
    csq = csq_with(e, acquire=guest(e, RET), release=guest(e, RET), peek=guest(e, RET_ZERO))
    rec = read_irp(e)
    e.run_model(e._csq_insert("IoCsqInsertIrp", csq, rec.irp, 0), PASSIVE_LEVEL, "IoCsqInsertIrp")
    assert any("CsqAcquireLock did not acquire" in m for m in e.pool_errors)
    assert any("CsqReleaseLock did not release" in m for m in e.pool_errors)
    # The model did its part: queued, marked pending, cancelable.
    assert rec.queued and e.marked_pending(rec) and e.u64(rec.irp + e.IRP_CANCEL_ROUTINE) == e.CSQ_CANCEL_ROUTINE


def test_a_peek_that_returns_an_irp_not_in_the_queue_is_reported(e):
    # Shows rule K20 firing.
    csq = csq_with(e, acquire=guest(e, RET), release=guest(e, RET), peek=returns(e, 0x123450))
    got = e.run_model(e._csq_remove_next("IoCsqRemoveNextIrp", csq, 0), PASSIVE_LEVEL, "IoCsqRemoveNextIrp")
    assert got == 0
    assert any("not queued" in m for m in e.pool_errors)


def test_a_driver_that_touches_driver_context_3_is_reported(e):
    """The IoCsqXxx routines keep their context in DriverContext[3]."""
    # Shows rule K22 firing.
    csq = csq_with(e, acquire=guest(e, RET), release=guest(e, RET), peek=guest(e, RET_ZERO))
    rec = read_irp(e)
    e.run_model(e._csq_insert("IoCsqInsertIrp", csq, rec.irp, 0), PASSIVE_LEVEL, "IoCsqInsertIrp")
    e.w64(rec.irp + e.IRP_DRIVER_CONTEXT_3, 0xBAD)
    e._csq_took(rec.irp, e.csqs[csq])
    assert any("DriverContext[3] changed" in m for m in e.pool_errors)


def test_a_dispatch_routine_breaking_the_pending_protocol_is_caught(e):
    """STATUS_PENDING returned without IoMarkIrpPending, and an IRP
    completed with another status than the one returned."""
    # Shows rule K14 firing.
    rec = read_irp(e)
    e.major_function = lambda major: returns(e, L.STATUS_PENDING)
    with pytest.raises(AssertionError, match="without marking"):
        e.dispatch(rec)
    rec = read_irp(e)
    complete(e, rec, L.STATUS_SUCCESS)
    e.major_function = lambda major: returns(e, L.STATUS_INVALID_PARAMETER)
    with pytest.raises(AssertionError, match="dispatch returned"):
        e.dispatch(rec)


def test_cancelling_a_completed_irp_is_refused(e):
    # Shows rule K17: only a live IRP is cancelled.
    rec = read_irp(e)
    complete(e, rec)
    with pytest.raises(RuntimeError, match="not a live IRP"):
        e.cancel_irp(rec.irp)


def test_a_routine_called_above_its_irql_is_reported(e):
    # Shows rule K1 firing.
    e.irql = DISPATCH_LEVEL + 1
    e._lock_acquire("KeAcquireSpinLockRaiseToDpc", 0xA0, "spin")
    assert any("KeAcquireSpinLockRaiseToDpc called at IRQL 3 (at most 2)" in m for m in e.pool_errors)


def test_an_in_stack_queued_lock_is_released_through_its_handle_and_a_reused_handle_is_reported(e):
    # Shows rule K8: the handle's release restores the IRQL it saved; a
    # handle that already holds a lock may not take another.
    e.irql = PASSIVE_LEVEL
    e._queued_acquire(None, "KeAcquireInStackQueuedSpinLock", None, [0xA0, 0x500])
    assert e.irql == DISPATCH_LEVEL
    e._queued_release(None, "KeReleaseInStackQueuedSpinLock", None, [0x500])
    assert (e.irql, e.lock_stack, e.pool_errors) == (PASSIVE_LEVEL, [], [])
    e._queued_acquire(None, "KeAcquireInStackQueuedSpinLock", None, [0xA0, 0x500])
    e._queued_acquire(None, "KeAcquireInStackQueuedSpinLock", None, [0xB0, 0x500])
    assert any("handle 0x500 already holds a lock" in m for m in e.pool_errors)


def test_a_free_with_the_wrong_tag_and_a_double_free_are_reported(e):
    # Shows rule K28 firing.
    tag = int.from_bytes(b"WfpM", "little")
    block = 0x7000
    e._ex_allocate_pool2(None, "ExAllocatePool2", lambda argv: block, [0x40, 64, tag])
    assert e.pool == {block: (64, tag)}
    e._ex_free_pool_with_tag(None, "ExFreePoolWithTag", None, [block, tag + 1])
    assert any(f"tag {tag + 1:#x} != {tag:#x}" in m for m in e.pool_errors)
    e._ex_free_pool(None, "ExFreePool", None, [block])
    assert any(f"ExFreePool({block:#x}): not an outstanding allocation" in m for m in e.pool_errors)


def test_deleting_a_device_that_is_not_one_is_reported(e):
    # Shows rule K31 firing.
    e._io_delete_device(None, "IoDeleteDevice", lambda argv: 0, [0xDEAD0])
    assert any("IoDeleteDevice(0xdead0): unknown device" in m for m in e.pool_errors)


def test_handles_opened_on_a_non_device_or_closed_unopened_are_reported(e):
    # Shows rule K33 firing.
    out = e.palloc(8)
    rv = e._ob_open_by_pointer(None, "ObOpenObjectByPointer", None, [0xBEEF0, 0x200, 0, 0x40000, 0, 0, out])
    assert rv == L.STATUS_INVALID_PARAMETER
    assert any("ObOpenObjectByPointer(0xbeef0): not a device object" in m for m in e.pool_errors)
    assert e._zw_close(None, "ZwClose", None, [0x1234]) == L.STATUS_INVALID_HANDLE
    assert any("ZwClose(0x1234): not an open handle" in m for m in e.pool_errors)


def test_a_wait_without_a_timeout_or_with_a_zero_one_is_reported(e):
    # Shows rule K34 firing.
    e._ke_wait(None, "KeWaitForSingleObject", None, [0, 0, 0, 0, 0])
    assert any("wait without a timeout" in m for m in e.pool_errors)
    zero = e.palloc(8)  # a LARGE_INTEGER of 0: not a relative timeout
    e._ke_wait(None, "KeWaitForSingleObject", None, [0, 0, 0, 0, zero])
    assert any("absolute or zero wait timeout" in m for m in e.pool_errors)


def test_unknown_callout_ids_are_answered_not_found(e):
    # Shows rule E3: no callout was ever registered with this id.
    rv = e._callout_unregister(None, "FwpsCalloutUnregisterById0", None, [0x999])
    assert rv == L.STATUS_FWP_CALLOUT_NOT_FOUND
    rv = e._flow_associate(None, "FwpsFlowAssociateContext0", None, [0x10, 20, 0x999, 0xC0])
    assert rv == L.STATUS_FWP_CALLOUT_NOT_FOUND
    assert e.contexts == {}


def test_an_injection_handle_is_destroyed_once(e):
    # Shows rule E15: the second destruction of a handle is refused.
    out = e.palloc(8)
    assert e._injection_create(None, "FwpsInjectionHandleCreate0", None, [2, 0, out]) == L.STATUS_SUCCESS
    handle = e.u64(out)
    assert e._injection_destroy(None, "FwpsInjectionHandleDestroy0", None, [handle]) == L.STATUS_SUCCESS
    assert e._injection_destroy(None, "FwpsInjectionHandleDestroy0", None, [handle]) == L.STATUS_INVALID_PARAMETER


def test_etw_calls_through_an_unregistered_handle_are_reported(e):
    # Shows rule T2 firing.
    e._etw_write_transfer(None, "EtwWriteTransfer", None, [0x1234, 0, 0, 0, 0, 0])
    e._etw_set_information(None, "EtwSetInformation", None, [0x1234, 2, 0, 0])
    e._etw_unregister(None, "EtwUnregister", None, [0x1234])
    text = " | ".join(e.pool_errors)
    for needle in ("EtwWriteTransfer(0x1234): not a registered provider",
                   "EtwSetInformation(0x1234): not registered", "EtwUnregister(0x1234): not registered"):
        assert needle in text, needle


def write_event(e, handle: int, payload: bytes) -> None:
    """One TraceLogging event "E" with one UINT32 field "f" through
    EtwWriteTransfer, carrying `payload` as its data."""
    provider_meta = struct.pack("<H", 4) + b"P\0"
    event_meta = struct.pack("<H", 8) + b"\0" + b"E\0" + b"f\0" + bytes([8])  # in-type UINT32
    chunks = [(provider_meta, 2), (event_meta, 1), (payload, 0)]
    descriptors = b"".join(struct.pack("<QII", e.put((C.c_uint8 * len(d))(*d)), len(d), kind)
                           for d, kind in chunks)
    e._etw_write_transfer(None, "EtwWriteTransfer", None,
                          [handle, e.put((C.c_uint8 * 16)()), 0, 0, len(chunks), e.put(
                              (C.c_uint8 * len(descriptors))(*descriptors))])


def test_an_event_whose_payload_its_metadata_does_not_describe_is_refused(e):
    # Shows rule T4 firing (and, first, an event that is right).
    out = e.palloc(8)
    e._etw_register(None, "EtwRegister", None, [e.put((C.c_uint8 * 16)()), 0, 0, out])
    handle = e.u64(out)
    write_event(e, handle, struct.pack("<I", 7))
    assert [(ev["name"], ev["values"]) for ev in e.events] == [("E", {"f": 7})]
    with pytest.raises(AssertionError, match="4 bytes of data not described by metadata"):
        write_event(e, handle, struct.pack("<II", 7, 8))
