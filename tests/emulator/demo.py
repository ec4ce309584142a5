"""Runs the real wfpmon.sys through a short life in the emulator and prints
what happened, in order: DriverEntry's calls, a few flows with the counters
the driver reports for them, Unload's calls (BUSY → remove → retry), and the
ETW events the driver wrote.

    python tests/emulator/demo.py [path/to/wfpmon.sys]
"""

import ipaddress
import sys

import protocol as P
import wfp_layout as L
from conftest import IMAGE, KEYS
from fake_engine import FakeEngine

SHOWN = {
    "IoCsqInitialize", "IoCsqRemoveNextIrp", "IoCreateDevice", "ObOpenObjectByPointer", "ZwSetSecurityObject", "ZwClose", "FwpsCalloutRegister1",
    "FwpsInjectionHandleCreate0", "FwpsFlowAssociateContext0", "FwpsCalloutUnregisterById0",
    "FwpsFlowRemoveContext0", "KeWaitForSingleObject", "IoDeleteDevice", "FwpsInjectionHandleDestroy0",
}
STATUS = {0: "STATUS_SUCCESS", 0x103: "STATUS_PENDING", 0x80000011: "STATUS_DEVICE_BUSY",
          0x102: "STATUS_TIMEOUT", None: "-"}


def show(e, start, title):
    print(f"\n== {title}")
    for c in e.calls[start:]:
        if c.api not in SHOWN:
            continue
        args = ", ".join(a if isinstance(a, str) else hex(a) for a in c.args)
        if c.api == "FwpsCalloutUnregisterById0":
            args = f"{args} ({e.callouts[c.args[0]].key})"
        if c.api == "IoCsqRemoveNextIrp":  # returns an IRP, not a status
            print(f"  {c.api}(queue of pending event reads) -> {hex(c.ret) if c.ret else 'NULL (none pending)'}")
            continue
        print(f"  {c.api}({args}) -> {STATUS.get(c.ret, hex(c.ret or 0))}")
    return len(e.calls)


def main():
    image = sys.argv[1] if len(sys.argv) > 1 else str(IMAGE)
    e = FakeEngine(image, remove_mode=lambda flow, layer, cid: "pending" if flow == 0x3003 else "sync")
    status = e.driver_entry()
    mark = show(e, 0, f"DriverEntry -> {STATUS.get(status, hex(status))}")
    if status:
        sys.exit(1)

    flows = [
        ("wfpmon-flow-established-v4", 4, 6, 0xC0A80002, 51000, 0x5DB8D822, 443, 0x3001, 4711),
        ("wfpmon-flow-established-v4", 4, 17, 0xC0A80002, 53000, 0x01010101, 53, 0x3002, 912),
        ("wfpmon-flow-established-v6", 6, 6, bytes.fromhex("20010db8000000000000000000000002"), 52000,
         bytes.fromhex("20010db8000000000000000000000443"), 443, 0x3003, 4711),
    ]
    for name, fam, proto, la, lp, ra, rp, handle, pid in flows:
        e.establish(KEYS[name], fam, proto, la, lp, ra, rp, L.FWP_DIRECTION_OUTBOUND, handle, pid)
    for n in (517, 1460, 1460):
        e.stream(0x3001, n, send=False)
    e.stream(0x3001, 220, send=True)
    e.datagram(0x3002, [8 + 41], inbound=False, header_size=8)
    e.datagram(0x3002, [97, 97], inbound=True)
    e.stream(0x3003, 1000, send=True)
    mark = show(e, mark, "Flows established (flow-established classifyFn)")

    listed, _ = P.list_all(lambda request, out_len: e.send_irp(
        e.IRP_MJ_DEVICE_CONTROL, P.IOCTL_LIST_FLOWS, request, out_len))
    print("\n== Flows as the driver reports them (IOCTL_WFPMON_LIST_FLOWS)")
    print(f"  {'flow':>6} {'proto':>5} {'local':>28} {'remote':>28} {'pid':>5} {'in B/pkt':>10} {'out B/pkt':>10}")
    for f in sorted(listed, key=lambda f: f["flow_id"]):
        v6 = f["family"] == 23
        addr = (lambda b: ipaddress.IPv6Address(b) if v6 else ipaddress.IPv4Address(b[:4]))
        local = f"{addr(f['local'])}:{f['local_port']}"
        remote = f"{addr(f['remote'])}:{f['remote_port']}"
        proto = {6: "tcp", 17: "udp"}.get(f["protocol"], str(f["protocol"]))
        print(f"  {f['flow_id']:>#6x} {proto:>5} {local:>28} {remote:>28} {f['process_id']:>5} "
              f"{f['bytes_inbound']:>6}/{f['packets_inbound']:<3} {f['bytes_outbound']:>6}/{f['packets_outbound']:<3}")

    e.unload()
    show(e, mark, "Unload")
    print("\n== ETW events of provider wfpmon (TraceLogging, decoded), lifecycle keyword")
    for ev in e.events:
        values = ", ".join(f"{k}={v:#x}" if k.endswith("Status") else f"{k}={v}"
                           for k, v in ev["values"].items())
        print(f"  {ev['name']}({values})")
    leaks = len(e.pool)
    print(f"\n== After unload: {sum(c.registered for c in e.callouts.values())} callouts registered, "
          f"{len(e.contexts)} flow contexts, {len(e.devices)} devices, {leaks} pool blocks outstanding")
    sys.exit(1 if leaks or e.devices or e.contexts else 0)


if __name__ == "__main__":
    main()
