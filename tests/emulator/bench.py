"""Deterministic cost of wfpmon's classify paths: instructions executed in
the emulator per call (the machine's timing is too noisy to measure; an
instruction count is repeatable for the same image and inputs).

    python tests/emulator/bench.py [wfpmon.sys]

Prints one line per path. `test_bench.py` holds the budgets.
"""

import sys

import protocol as P
import wfp_layout as L
from conftest import IMAGE, KEYS
from fake_engine import FakeEngine

# A typical image path as the engine gives it (device form), 61 UTF-16 units.
PATH = "\\device\\harddiskvolume3\\program files\\mozilla firefox\\firefox.exe"


class Counter:
    def __init__(self, engine):
        self.count = 0
        base = engine.module.base
        size = engine.module.image_size
        engine.se.add_code_hook(self._hook, begin=base, end=base + size)

    def _hook(self, *args):  # (emu, addr, size, ctx) on 1.x, (emu, addr, size) on 2.x
        self.count += 1

    def measure(self, fn):
        start = self.count
        fn()
        return self.count - start


def per_packet(e, counter, stream_flow, datagram_flow):
    return {
        "stream data (one indication)": counter.measure(lambda: e.stream(stream_flow, 1460, send=True)),
        "datagram data (one NET_BUFFER)": counter.measure(
            lambda: e.datagram(datagram_flow, [512], inbound=True)),
        "datagram data (8 NET_BUFFERs)": counter.measure(
            lambda: e.datagram(datagram_flow, [512] * 8, inbound=True)),
    }


def measure(image: str, with_events: bool = False) -> dict[str, int]:
    """Instruction counts of each path. `with_events`: the same per-packet
    paths measured while a reader's event read is pending and the flows
    belong to a process with a path (the per-packet counts must not
    change: events and processes are per flow)."""
    e = FakeEngine(image)
    assert e.driver_entry() == 0
    counter = Counter(e)
    key4 = KEYS["wfpmon-flow-established-v4"]
    n = iter(range(0x10000, 0x20000))
    results = {
        "flow established (TCP/IPv4, tracked)": counter.measure(
            lambda: e.establish(key4, 4, 6, 1, 2, 3, 4, L.FWP_DIRECTION_OUTBOUND, next(n), 1)),
        "flow established (TCP/IPv4, tracked, process path)": counter.measure(
            lambda: e.establish(key4, 4, 6, 1, 2, 3, 4, L.FWP_DIRECTION_OUTBOUND, next(n), 2, path=PATH)),
    }
    e.establish(key4, 4, 17, 1, 2, 3, 4, L.FWP_DIRECTION_OUTBOUND, 0x500, 1, path=PATH)
    results["flow ended (flowDeleteFn)"] = counter.measure(lambda: e.end_flow(0x10001))
    if with_events:
        reader = e.open_handle()
        e.send_irp_async(0x0E, P.IOCTL_READ_EVENTS, P.read_events_request(0, P.FROM_NOW, wait=True),
                         P.read_events_out_len(4), reader)
    results.update(per_packet(e, counter, 0x10000, 0x500))
    e.unload()
    return results


def main():
    image = sys.argv[1] if len(sys.argv) > 1 else str(IMAGE)
    for path, count in measure(image).items():
        print(f"{count:>7} instructions  {path}")


if __name__ == "__main__":
    main()
