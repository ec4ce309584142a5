"""The fake kernel's own checks fire: each rule the new models enforce
(IRP completion, spin locks and IRQL, the cancel-safe queue's use of the
driver's callbacks, the dispatch routine's pending protocol) is broken on
purpose here, by tiny guest functions or direct calls, and must be
reported. A check that cannot fire would let the driver tests pass
vacuously."""

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
    rec = read_irp(e)
    complete(e, rec)
    assert e.pool_errors == []
    complete(e, rec)
    assert any("completed twice" in m for m in e.pool_errors)
    assert e.irp_errors() == [f"IRP {rec.irp:#x} (major 0xe, code {P.IOCTL_READ_EVENTS:#x}) completed 2 times"]


def test_completing_a_queued_or_cancelable_irp_or_with_a_lock_held_is_reported(e):
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
    rec = read_irp(e)
    assert e.irp_errors() == [f"IRP {rec.irp:#x} (major 0xe, code {P.IOCTL_READ_EVENTS:#x}) completed 0 times"]


def test_spin_lock_rules_are_enforced(e):
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
    lock = e.palloc(8)
    e.se.mem_write(lock, struct.pack("<Q", 1))
    e._spin_acquire(None, "KeAcquireSpinLockRaiseToDpc", None, [lock])
    assert any("not an initialised, free spin lock" in m for m in e.pool_errors)


def test_returning_to_the_system_with_a_lock_held_is_reported(e):
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
    csq = csq_with(e, acquire=guest(e, RET), release=guest(e, RET), peek=guest(e, RET_ZERO))
    rec = read_irp(e)
    e.run_model(e._csq_insert("IoCsqInsertIrp", csq, rec.irp, 0), PASSIVE_LEVEL, "IoCsqInsertIrp")
    assert any("CsqAcquireLock did not acquire" in m for m in e.pool_errors)
    assert any("CsqReleaseLock did not release" in m for m in e.pool_errors)
    # The model did its part: queued, marked pending, cancelable.
    assert rec.queued and e.marked_pending(rec) and e.u64(rec.irp + e.IRP_CANCEL_ROUTINE) == e.CSQ_CANCEL_ROUTINE


def test_a_peek_that_returns_an_irp_not_in_the_queue_is_reported(e):
    csq = csq_with(e, acquire=guest(e, RET), release=guest(e, RET), peek=returns(e, 0x123450))
    got = e.run_model(e._csq_remove_next("IoCsqRemoveNextIrp", csq, 0), PASSIVE_LEVEL, "IoCsqRemoveNextIrp")
    assert got == 0
    assert any("not queued" in m for m in e.pool_errors)


def test_a_driver_that_touches_driver_context_3_is_reported(e):
    """The IoCsqXxx routines keep their context in DriverContext[3]."""
    csq = csq_with(e, acquire=guest(e, RET), release=guest(e, RET), peek=guest(e, RET_ZERO))
    rec = read_irp(e)
    e.run_model(e._csq_insert("IoCsqInsertIrp", csq, rec.irp, 0), PASSIVE_LEVEL, "IoCsqInsertIrp")
    e.w64(rec.irp + e.IRP_DRIVER_CONTEXT_3, 0xBAD)
    e._csq_took(rec.irp, e.csqs[csq])
    assert any("DriverContext[3] changed" in m for m in e.pool_errors)


def test_a_dispatch_routine_breaking_the_pending_protocol_is_caught(e):
    """STATUS_PENDING returned without IoMarkIrpPending, and an IRP
    completed with another status than the one returned."""
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
    rec = read_irp(e)
    complete(e, rec)
    with pytest.raises(RuntimeError, match="not a live IRP"):
        e.cancel_irp(rec.irp)
