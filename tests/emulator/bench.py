"""Deterministic cost of wfpmon's classify paths: instructions executed in
the emulator per call (the machine's timing is too noisy to measure; an
instruction count is repeatable for the same image and inputs).

    python tests/emulator/bench.py [wfpmon.sys]

Prints one line per path. `test_bench.py` holds the budgets.
"""

import sys

import wfp_layout as L
from conftest import IMAGE, KEYS
from fake_engine import FakeEngine


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


def measure(image: str) -> dict[str, int]:
    e = FakeEngine(image)
    assert e.driver_entry() == 0
    counter = Counter(e)
    key4 = KEYS["wfpmon-flow-established-v4"]
    n = iter(range(0x10000, 0x20000))
    results = {
        "flow established (TCP/IPv4, tracked)": counter.measure(
            lambda: e.establish(key4, 4, 6, 1, 2, 3, 4, L.FWP_DIRECTION_OUTBOUND, next(n), 1)),
    }
    e.establish(key4, 4, 17, 1, 2, 3, 4, L.FWP_DIRECTION_OUTBOUND, 0x500, 1)
    results["stream data (one indication)"] = counter.measure(
        lambda: e.stream(0x10000, 1460, send=True))
    results["datagram data (one NET_BUFFER)"] = counter.measure(
        lambda: e.datagram(0x500, [512], inbound=True))
    results["datagram data (8 NET_BUFFERs)"] = counter.measure(
        lambda: e.datagram(0x500, [512] * 8, inbound=True))
    e.unload()
    return results


def main():
    image = sys.argv[1] if len(sys.argv) > 1 else str(IMAGE)
    for path, count in measure(image).items():
        print(f"{count:>7} instructions  {path}")


if __name__ == "__main__":
    main()
