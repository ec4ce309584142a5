"""The TraceLogging (ETW) provider of the real wfpmon.sys: registered first
and unregistered last on every path, the lifecycle reported as structured
events, flow events only when their keyword is enabled, nothing per packet.

The fake engine decodes each EtwWriteTransfer from its TraceLogging
metadata (event name, field names, in/out types), so these tests read the
events as a decoder (tracerpt, WPA) would."""

import hashlib
import uuid

import pytest

import wfp_layout as L
from conftest import CATALOG, KEYS, FakeEngine

LIFECYCLE, ERRORS, FLOWS = 0x1, 0x2, 0x4
INFORMATIONAL, VERBOSE = 4, 5
# TraceLogging in/out types (TraceLoggingProvider.h).
IN_U8, IN_U16, IN_U32, IN_U64, IN_BINARY, IN_HEX64, IN_STR8 = 4, 6, 8, 10, 14, 21, 23
OUT_PORT, OUT_IPV4, OUT_IPV6, OUT_NTSTATUS, OUT_UTF8 = 7, 8, 9, 14, 35


def tracelogging_guid(name: str) -> str:
    """The provider GUID TraceLogging (and EventSource) derive from a name:
    SHA-1 over a fixed namespace and the upper-cased UTF-16BE name."""
    namespace = bytes.fromhex("482C2DB2C39047C887F81A15BFC130FB")
    digest = bytearray(hashlib.sha1(namespace + name.upper().encode("utf-16-be")).digest()[:16])
    digest[7] = (digest[7] & 0x0F) | 0x50
    return str(uuid.UUID(bytes_le=bytes(digest)))


PROVIDER_GUID = "ab0992a4-5b4d-595c-5337-c50e1d163b2f"


def names(e):
    return [ev["name"] for ev in e.events]


def test_provider_is_wfpmon_with_the_tracelogging_guid(loaded):
    assert tracelogging_guid("MyProvider") == "b3864c38-4273-58c5-545b-8b3608343471"  # the crate's own example
    assert tracelogging_guid("wfpmon") == PROVIDER_GUID
    (register,) = loaded.api_sequence("EtwRegister")
    assert register.args == (PROVIDER_GUID,)
    assert loaded.etw_traits == [b"\x09\x00wfpmon\x00"], "provider traits: the name"
    assert {ev["provider"] for ev in loaded.events} == {"wfpmon"}


def test_driver_entry_registers_the_provider_first(loaded):
    first_kernel_call = next(c for c in loaded.calls if c.api not in ("EtwRegister", "EtwWriteTransfer",
                                                                    "EtwSetInformation"))
    assert loaded.calls[0].api == "EtwRegister"
    assert first_kernel_call.api == "KeInitializeEvent"  # then IoCreateDevice


def test_lifecycle_events_in_order_with_typed_fields(loaded):
    # Shows rule T4: every event decoded from its metadata.
    loaded.unload()
    steps = [(ev["name"], ev["values"].get("Call") or ev["values"].get("Callout")) for ev in loaded.events]
    registered = [("CalloutRegister", name) for _, name in CATALOG]
    unregistered = []
    for _, name in reversed(CATALOG):
        unregistered += [("CalloutUnregisterAttempt", name), ("CalloutUnregistered", name)]
    assert steps == [
        ("DriverEntry", None),
        ("DriverEntryStep", "IoCreateDevice"),
        ("DriverEntryStep", "ObOpenObjectByPointer"),
        ("DriverEntryStep", "ZwSetSecurityObject"),
        ("DriverEntryStep", "ZwClose"),
        *registered,
        ("DriverEntryStep", "FwpsInjectionHandleCreate0"),
        ("DriverEntryComplete", None),
        ("Unload", None),
        ("TeardownBegins", None),
        *unregistered,
        ("TeardownStep", "IoDeleteDevice"),
        ("TeardownStep", "FwpsInjectionHandleDestroy0"),
        ("TeardownComplete", None),
    ]
    assert all(ev["keyword"] & LIFECYCLE for ev in loaded.events)
    # Statuses are NTSTATUS-formatted 32-bit fields; names are UTF-8 strings;
    # ids and counts are integers.
    step = loaded.events_named("DriverEntryStep")[0]
    kinds = {f["name"]: (f["in"], f["out"]) for f in step["fields"]}
    assert kinds == {"Call": (IN_STR8, OUT_UTF8), "Status": (IN_U32, OUT_NTSTATUS)}
    reg = loaded.events_named("CalloutRegister")[0]
    assert {f["name"]: f["in"] for f in reg["fields"]} == {"Callout": IN_STR8, "CalloutId": IN_U32, "Status": IN_U32}
    assert [ev["values"]["CalloutId"] for ev in loaded.events_named("CalloutRegister")] == \
        [loaded.callout_by_key(key).id for key, _ in CATALOG]
    # Every unregistration attempt is reported, at Verbose level.
    attempts = loaded.events_named("CalloutUnregisterAttempt")
    assert all(ev["level"] == VERBOSE and ev["values"]["Status"] == 0 for ev in attempts)


def test_unload_with_flows_reports_removal_passes(image):
    e = FakeEngine(image)
    assert e.driver_entry() == 0
    key = KEYS["wfpmon-flow-established-v4"]
    for i in range(5):
        e.establish(key, 4, 6, 1, 1000 + i, 3, 4, L.FWP_DIRECTION_OUTBOUND, 0x700 + i, 9)
    e.unload()
    (busy,) = [ev for ev in e.events_named("CalloutUnregisterAttempt")
               if ev["values"]["Status"] == L.STATUS_DEVICE_BUSY]
    assert busy["values"]["Callout"] == "wfpmon-stream-v4"
    (removal,) = e.events_named("RemovalPass")
    assert removal["values"] == {"Callout": "wfpmon-stream-v4", "Removed": 5, "Pending": 0, "NoContext": 0,
                                 "Other": 0, "FirstOtherStatus": 0, "StillTracked": 0}
    (begins,) = e.events_named("TeardownBegins")
    assert begins["values"] == {"FlowsTracked": 5, "FlowsDeleted": 0}


def test_flow_events_only_when_their_keyword_is_enabled(image):
    # Shows rule T1: a session enables the provider later.
    e = FakeEngine(image, etw_session=(VERBOSE, LIFECYCLE | ERRORS))
    assert e.driver_entry() == 0
    key = KEYS["wfpmon-flow-established-v4"]
    e.establish(key, 4, 6, 0xC0A80002, 50000, 0x5DB8D822, 443, L.FWP_DIRECTION_OUTBOUND, 0x100, 4242)
    e.end_flow(0x100)
    assert [n for n in names(e) if n.startswith("Flow")] == []
    # A session now asks for flows too.
    e.enable_trace(VERBOSE, LIFECYCLE | ERRORS | FLOWS)
    e.establish(key, 4, 6, 0xC0A80002, 50001, 0x5DB8D822, 443, L.FWP_DIRECTION_OUTBOUND, 0x101, 4242)
    e.stream(0x101, 1000, send=True)
    e.stream(0x101, 300, send=False)
    e.stream(0x101, 200, send=False)
    e.end_flow(0x101)
    (up,) = e.events_named("FlowEstablished")
    assert up["keyword"] == FLOWS and up["level"] == INFORMATIONAL
    v = up["values"]
    assert (v["FlowHandle"], v["ProcessId"], v["IpProtocol"], v["Direction"]) == (0x101, 4242, 6, "outbound")
    assert v["LocalAddress"] == 0x0200A8C0 and v["RemoteAddress"] == 0x22D8B85D, "IPv4 in network order"
    # TraceLogging's port type holds the port in network byte order.
    ntohs = lambda x: int.from_bytes(x.to_bytes(2, "little"), "big")  # noqa: E731
    assert (ntohs(v["LocalPort"]), ntohs(v["RemotePort"])) == (50001, 443)
    kinds = {f["name"]: f["out"] for f in up["fields"]}
    assert (kinds["LocalAddress"], kinds["LocalPort"]) == (OUT_IPV4, OUT_PORT)
    (down,) = e.events_named("FlowEnded")
    assert down["values"]["FlowHandle"] == 0x101
    assert (down["values"]["BytesOut"], down["values"]["PacketsOut"]) == (1000, 1)
    assert (down["values"]["BytesIn"], down["values"]["PacketsIn"]) == (500, 2)


def test_ipv6_flow_events_carry_ipv6_addresses(image):
    e = FakeEngine(image, etw_session=(VERBOSE, FLOWS))
    assert e.driver_entry() == 0
    local = bytes.fromhex("fe800000000000000000000000000001")
    remote = bytes.fromhex("20010db8000000000000000000000053")
    e.establish(KEYS["wfpmon-flow-established-v6"], 6, 17, local, 5353, remote, 53,
                L.FWP_DIRECTION_INBOUND, 0x200, 77)
    (up,) = e.events_named("FlowEstablished")
    assert (up["values"]["LocalAddress"], up["values"]["RemoteAddress"]) == (local, remote)
    assert {f["name"]: (f["in"], f["out"]) for f in up["fields"]}["RemoteAddress"] == (IN_BINARY, OUT_IPV6)
    assert up["values"]["Direction"] == "inbound"


def test_the_per_packet_path_writes_nothing(image):
    e = FakeEngine(image, etw_session=(VERBOSE, 0xFFFFFFFFFFFFFFFF))
    assert e.driver_entry() == 0
    e.establish(KEYS["wfpmon-flow-established-v4"], 4, 6, 1, 2, 3, 4, L.FWP_DIRECTION_OUTBOUND, 0x300, 1)
    e.establish(KEYS["wfpmon-flow-established-v6"], 6, 17, bytes(16), 5, bytes(16), 6,
                L.FWP_DIRECTION_OUTBOUND, 0x301, 1)
    before = len(e.calls)
    for _ in range(10):
        e.stream(0x300, 100, send=True)
        e.datagram(0x301, [10, 20], inbound=True)
    assert e.calls[before:] == [], "a packet made a kernel call (or wrote an event)"


@pytest.mark.parametrize("api,nth", [("IoCreateDevice", 1), ("ZwSetSecurityObject", 1),
                                     ("FwpsCalloutRegister1", 4), ("FwpsInjectionHandleCreate0", 1)])
def test_a_failed_driver_entry_reports_and_unregisters_the_provider_last(image, api, nth):
    # Shows rule T3 (checked here, not by the model).
    status = 0xC000009A
    e = FakeEngine(image, faults={api: {nth: status}})
    assert e.driver_entry() == status
    (failed,) = e.events_named("DriverEntryFailed")
    assert failed["values"] == {"Call": api, "Status": status}
    assert failed["keyword"] & ERRORS and failed["level"] == 2
    assert names(e)[-1] == "TeardownComplete"
    assert e.calls[-1].api == "EtwUnregister" and e.etw == {}


def test_provider_registration_failure_does_not_fail_the_driver(image):
    # Shows rules T1 and K30: EtwRegister fails.
    e = FakeEngine(image, faults={"EtwRegister": {1: 0xC0000001}})
    assert e.driver_entry() == 0
    e.unload()
    assert e.events == [] and e.api_sequence("EtwUnregister") == []
    assert e.devices == set() and not any(c.registered for c in e.callouts.values())


def test_per_flow_failures_are_summed_up_not_logged_per_flow(image):
    e = FakeEngine(image, faults={"FwpsFlowAssociateContext0": {1: L.STATUS_UNSUCCESSFUL, 2: L.STATUS_UNSUCCESSFUL},
                                  "ExAllocatePool2": {3: 0}})
    assert e.driver_entry() == 0
    key = KEYS["wfpmon-flow-established-v4"]
    for i in range(5):
        e.establish(key, 4, 6, 1, 100 + i, 3, 4, L.FWP_DIRECTION_OUTBOUND, 0x900 + i, 1)
    assert [n for n in names(e) if "Fail" in n] == [], "nothing per failed flow"
    e.unload()
    (summary,) = e.events_named("FlowFailures")
    assert summary["keyword"] == ERRORS
    assert summary["values"] == {"AllocationFailures": 1, "AssociationFailures": 2}
