"""Per-packet counting through the real stream and datagram-data classifyFn,
read back through the real control device, and the observe-only action
protocol."""

import pytest

import protocol as P
import wfp_layout as L
from conftest import KEYS


def flows_by_id(e):
    flows, _ = P.list_all(lambda request, out_len: e.send_irp(
        e.IRP_MJ_DEVICE_CONTROL, P.IOCTL_LIST_FLOWS, request, out_len))
    return {f["flow_id"]: f for f in flows}


def stats(e, live=False):
    """QUERY_STATS: walk-free (ended flows' traffic), or with live flows'
    traffic summed (STATS_LIVE_TRAFFIC)."""
    status, info, raw = e.send_irp(e.IRP_MJ_DEVICE_CONTROL, P.IOCTL_QUERY_STATS,
                                   P.query_stats_request(P.STATS_LIVE_TRAFFIC if live else 0),
                                   P.STATS_SIZE)
    assert (status, info) == (0, P.STATS_SIZE)
    s = P.parse_stats(raw)
    assert s["flags"] == (P.STATS_INCLUDES_LIVE_TRAFFIC if live else 0)
    return s


def tcp4(e, handle, pid=4242):
    e.establish(KEYS["wfpmon-flow-established-v4"], 4, 6, 0xC0A80002, 50000, 0x5DB8D822, 443,
                L.FWP_DIRECTION_OUTBOUND, handle, pid)


def udp6(e, handle, pid=77):
    local = bytes.fromhex("fe800000000000000000000000000001")
    remote = bytes.fromhex("20010db8000000000000000000000053")
    e.establish(KEYS["wfpmon-flow-established-v6"], 6, 17, local, 5353, remote, 53,
                L.FWP_DIRECTION_INBOUND, handle, pid)


def test_flow_identity_is_recorded(loaded):
    tcp4(loaded, 0x100)
    udp6(loaded, 0x200)
    f = flows_by_id(loaded)
    assert f[0x100]["family"] == 2 and f[0x100]["protocol"] == 6
    assert f[0x100]["local"][:4] == bytes([192, 168, 0, 2])
    assert f[0x100]["remote"][:4] == bytes([93, 184, 216, 34])
    assert (f[0x100]["local_port"], f[0x100]["remote_port"]) == (50000, 443)
    assert f[0x100]["process_id"] == 4242 and f[0x100]["direction"] == 0
    assert f[0x200]["family"] == 23 and f[0x200]["protocol"] == 17
    assert f[0x200]["local"] == bytes.fromhex("fe800000000000000000000000000001")
    assert f[0x200]["remote"] == bytes.fromhex("20010db8000000000000000000000053")
    assert f[0x200]["direction"] == 1 and f[0x200]["process_id"] == 77


def test_stream_counting_per_direction(loaded):
    # Shows rule E7: each stream classify carries the flow's context.
    tcp4(loaded, 0x100)
    sent = [1, 1460, 65535, 3]
    received = [512, 9000]
    for n in sent:
        loaded.stream(0x100, n, send=True)
    for n in received:
        loaded.stream(0x100, n, send=False)
    loaded.stream(0x100, 0, send=True)  # a zero-length indication counts nothing
    f = flows_by_id(loaded)[0x100]
    assert (f["bytes_outbound"], f["packets_outbound"]) == (sum(sent), len(sent))
    assert (f["bytes_inbound"], f["packets_inbound"]) == (sum(received), len(received))


def test_stream_direction_falls_back_to_the_receive_flag(loaded):
    tcp4(loaded, 0x100)
    loaded.stream(0x100, 40, send=False, direction_field=False)
    loaded.stream(0x100, 60, send=True, direction_field=False)
    f = flows_by_id(loaded)[0x100]
    assert (f["bytes_inbound"], f["bytes_outbound"]) == (40, 60)


def test_datagram_counting_counts_every_net_buffer(loaded):
    udp6(loaded, 0x200)
    loaded.datagram(0x200, [100], inbound=True)
    loaded.datagram(0x200, [200, 300, 400], inbound=True)
    loaded.datagram(0x200, [8 + 1200], inbound=False, header_size=8)
    f = flows_by_id(loaded)[0x200]
    assert (f["bytes_inbound"], f["packets_inbound"]) == (1000, 4)
    assert (f["bytes_outbound"], f["packets_outbound"]) == (1200, 1)


@pytest.mark.parametrize("header_size", [8, None])
def test_datagrams_count_the_transport_payload_in_both_directions(loaded, header_size):
    """"Data offset positions": at the datagram-data layer an inbound
    NET_BUFFER starts at the payload, an outbound one at the UDP header.
    The same 100-byte payload is counted as 100 bytes either way — with the
    metadata's transportHeaderSize, or without it the fixed 8-byte UDP
    header."""
    udp6(loaded, 0x200)
    loaded.datagram(0x200, [100, 100], inbound=True, header_size=header_size)
    loaded.datagram(0x200, [8 + 100, 8 + 100], inbound=False, header_size=header_size)
    f = flows_by_id(loaded)[0x200]
    assert (f["bytes_inbound"], f["packets_inbound"]) == (200, 2)
    assert (f["bytes_outbound"], f["packets_outbound"]) == (200, 2)


@pytest.mark.parametrize("protocol", [1, 58])
def test_inbound_icmp_is_counted_without_its_header(loaded, protocol):
    """"Data offset positions": inbound ICMP data at the datagram-data layer
    starts at the ICMP header, unlike UDP; the metadata's header size is
    skipped so that both directions count the ICMP payload."""
    udp6(loaded, 0x200)
    loaded.datagram(0x200, [8 + 56], inbound=True, header_size=8, protocol=protocol)
    loaded.datagram(0x200, [8 + 56], inbound=False, header_size=8, protocol=protocol)
    f = flows_by_id(loaded)[0x200]
    assert (f["bytes_inbound"], f["bytes_outbound"]) == (56, 56)


def test_outbound_header_size_comes_from_the_metadata(loaded):
    """Another transport header size (e.g. a protocol other than UDP at this
    layer) is taken from transportHeaderSize, never assumed."""
    udp6(loaded, 0x200)
    loaded.datagram(0x200, [20 + 50], inbound=False, header_size=20, protocol=47)
    loaded.datagram(0x200, [70], inbound=False, header_size=None, protocol=47)
    f = flows_by_id(loaded)[0x200]
    assert (f["bytes_outbound"], f["packets_outbound"]) == (50 + 70, 2)


def test_totals_survive_the_end_of_a_flow(loaded):
    tcp4(loaded, 0x100)
    udp6(loaded, 0x200)
    loaded.stream(0x100, 1000, send=True)
    loaded.datagram(0x200, [10, 20], inbound=True)
    loaded.end_flow(0x100)
    s = stats(loaded, live=True)
    assert s["flows_active"] == 1 and s["flows_tracked"] == 2 and s["flows_deleted"] == 1
    assert (s["bytes_outbound"], s["packets_outbound"]) == (1000, 1)
    assert (s["bytes_inbound"], s["packets_inbound"]) == (30, 2)
    # The walk-free query: the same counts, the ended flow's traffic only.
    cheap = stats(loaded)
    assert cheap["flows_active"] == 1 and cheap["flows_tracked"] == 2 and cheap["flows_deleted"] == 1
    assert (cheap["bytes_outbound"], cheap["packets_outbound"]) == (1000, 1)
    assert (cheap["bytes_inbound"], cheap["packets_inbound"]) == (0, 0)
    assert list(flows_by_id(loaded)) == [0x200]


def test_counting_can_be_switched_off_and_on(loaded):
    tcp4(loaded, 0x100)
    off = loaded.send_irp(loaded.IRP_MJ_DEVICE_CONTROL, P.IOCTL_SET_COUNTING, P.set_counting_request(0))
    assert off[:2] == (0, 0)
    loaded.stream(0x100, 500, send=True)
    assert stats(loaded)["counting_enabled"] == 0
    assert flows_by_id(loaded)[0x100]["bytes_outbound"] == 0
    loaded.send_irp(loaded.IRP_MJ_DEVICE_CONTROL, P.IOCTL_SET_COUNTING, P.set_counting_request(1))
    loaded.stream(0x100, 500, send=True)
    assert flows_by_id(loaded)[0x100]["bytes_outbound"] == 500


@pytest.mark.parametrize("rights", [0, L.FWPS_RIGHT_ACTION_WRITE])
def test_the_driver_only_observes(loaded, rights):
    """The action is written only with FWPS_RIGHT_ACTION_WRITE, and is then
    FWP_ACTION_CONTINUE: the traffic's fate is never changed."""
    expected = L.FWP_ACTION_CONTINUE if rights else loaded.UNTOUCHED_ACTION
    out = loaded.establish(KEYS["wfpmon-flow-established-v4"], 4, 6, 1, 2, 3, 4,
                           L.FWP_DIRECTION_OUTBOUND, 0x300, 1, rights=rights)
    assert out.actionType == expected
    out, packet = loaded.stream(0x300, 10, send=True, rights=rights)
    assert out.actionType == expected
    # The stream output of an observer passing data on ("Using a Callout for
    # Deep Inspection of Stream Data"): no action, nothing required, nothing
    # enforced — whatever was in the fields before.
    assert (packet.streamAction, packet.countBytesRequired, packet.countBytesEnforced) == \
        (L.FWPS_STREAM_ACTION_NONE, 0, 0)
    udp6(loaded, 0x301)
    assert loaded.datagram(0x301, [5], inbound=True, rights=rights).actionType == expected
    assert (out.flags, out.rights) == (0, rights)


def test_flow_without_flow_handle_metadata_is_not_tracked(loaded):
    out = loaded.establish(KEYS["wfpmon-flow-established-v4"], 4, 6, 1, 2, 3, 4,
                           L.FWP_DIRECTION_OUTBOUND, 0x400, 1,
                           metadata_fields=L.FWPS_METADATA_FIELD_PROCESS_ID)
    assert out.actionType == L.FWP_ACTION_CONTINUE
    assert loaded.contexts == {}


def test_per_packet_path_makes_no_kernel_call(loaded):
    """No allocation, no lock, no wait, no kernel call per packet. (wfpmon
    injects nothing, so it does not ask FwpsQueryPacketInjectionState0 per
    datagram: no packet can carry its handle's injection state.)"""
    tcp4(loaded, 0x100)
    udp6(loaded, 0x200)
    # A reader waits for events meanwhile: packets are not events.
    reader = loaded.open_handle()
    read = loaded.send_irp_async(loaded.IRP_MJ_DEVICE_CONTROL, P.IOCTL_READ_EVENTS,
                                 P.read_events_request(0, P.FROM_NOW, wait=True), P.read_events_out_len(4),
                                 reader)
    assert read.pending
    before, locks = len(loaded.calls), loaded.lock_acquisitions
    for _ in range(5):
        loaded.stream(0x100, 100, send=True)
        loaded.datagram(0x200, [10, 20], inbound=True)
        loaded.datagram(0x200, [18], inbound=False, header_size=8)
    assert loaded.calls[before:] == []
    assert loaded.lock_acquisitions == locks, "a spin lock taken per packet"
    assert not read.completed
    assert flows_by_id(loaded)[0x200]["bytes_outbound"] == 50


def test_a_flow_is_tracked_even_without_addresses_or_ports(loaded):
    """Only the protocol (which picks the data callout) and the flow handle
    are required; missing endpoint values are recorded as zero."""
    key = KEYS["wfpmon-flow-established-v4"]
    fn, args, out = loaded.establish_call(key, 4, 17, 1, 2, 3, 4, L.FWP_DIRECTION_OUTBOUND, 0x600, 5)
    # Blank every value but the protocol (FWP_EMPTY), as a sparse engine might.
    values = loaded.read(L.FWPS_INCOMING_VALUES0, args[0])
    for i in range(values.valueCount):
        if i != L.FE_PROTOCOL:
            loaded.se.mem_write(values.incomingValue + 16 * i, bytes(16))
    loaded.call(fn, args, loaded.CALLOUT_IRQL)
    f = flows_by_id(loaded)[0x600]
    assert (f["protocol"], f["local_port"], f["remote_port"]) == (17, 0, 0)
    assert f["local"] == bytes(16) and f["remote"] == bytes(16)


@pytest.mark.parametrize("action,flags,expected_action,rights_after", [
    (L.FWP_ACTION_CALLOUT_INSPECTION, 0, L.FWP_ACTION_CONTINUE, L.FWPS_RIGHT_ACTION_WRITE),
    (L.FWP_ACTION_CALLOUT_UNKNOWN, 0, L.FWP_ACTION_CONTINUE, L.FWPS_RIGHT_ACTION_WRITE),
    # A terminating filter needs BLOCK or PERMIT (anything else counts as
    # BLOCK): an observer permits, and gives up the right when asked to.
    (L.FWP_ACTION_CALLOUT_TERMINATING, 0, L.FWP_ACTION_PERMIT, L.FWPS_RIGHT_ACTION_WRITE),
    (L.FWP_ACTION_CALLOUT_TERMINATING, L.FWPS_FILTER_FLAG_CLEAR_ACTION_RIGHT, L.FWP_ACTION_PERMIT, 0),
])
def test_action_follows_the_filter_action_type(loaded, action, flags, expected_action, rights_after):
    loaded.filter = L.FWPS_FILTER1(actionType=action, flags=flags, filterId=7)
    out = loaded.establish(KEYS["wfpmon-flow-established-v4"], 4, 6, 1, 2, 3, 4,
                           L.FWP_DIRECTION_OUTBOUND, 0x800, 1)
    assert (out.actionType, out.rights) == (expected_action, rights_after)
    out, packet = loaded.stream(0x800, 10, send=True)
    assert (out.actionType, out.rights) == (expected_action, rights_after)
    assert out.actionType != L.FWP_ACTION_BLOCK
    # A stream callout that permits accepts the whole indication and asks
    # for nothing more; otherwise WFP indicates the data again
    # (FWPS_STREAM_CALLOUT_IO_PACKET0). Passing it on enforces nothing.
    enforced = 10 if expected_action == L.FWP_ACTION_PERMIT else 0
    assert (packet.countBytesEnforced, packet.streamAction, packet.countBytesRequired) == \
        (enforced, L.FWPS_STREAM_ACTION_NONE, 0)



def test_stream_bytes_the_callout_missed_are_counted_in_the_indications_direction(loaded):
    """FWPS_STREAM_CALLOUT_IO_PACKET0.missedBytes: bytes of the stream a
    higher-weight filter kept from this callout since its last classify.
    They belong to the flow: counted as bytes (not packets) with the
    indication that reports them, in its direction — also when the
    indication itself carries no data."""
    tcp4(loaded, 0x100)
    loaded.stream(0x100, 100, send=True, missed=400)
    loaded.stream(0x100, 0, send=True, missed=50)
    loaded.stream(0x100, 30, send=False, missed=7)
    loaded.stream(0x100, 5, send=False)
    f = flows_by_id(loaded)[0x100]
    assert (f["bytes_outbound"], f["packets_outbound"]) == (100 + 400 + 50, 1)
    assert (f["bytes_inbound"], f["packets_inbound"]) == (30 + 7 + 5, 2)
    # The process's totals and the statistics see the same bytes once the
    # flow ends.
    loaded.end_flow(0x100)
    s = stats(loaded)
    assert (s["bytes_outbound"], s["bytes_inbound"]) == (550, 42)
    assert (s["packets_outbound"], s["packets_inbound"]) == (1, 2)
