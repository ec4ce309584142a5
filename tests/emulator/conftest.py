"""Fixtures for the emulator tests of the real wfpmon.sys.

The image is built by the test command before pytest runs (scripts/test.sh);
a missing image is an error, never a skip.
"""

import os
import pathlib
import re
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from fake_engine import FakeEngine  # noqa: E402

IMAGE = pathlib.Path(os.environ.get(
    "WFPMON_SYS", ROOT / "target/x86_64-pc-windows-msvc/release/wfpmon.sys"))


def _catalog():
    """Callout keys and names, read from the one place they are defined
    (crates/wfpmon-core/src/catalog.rs), in registration order."""
    text = (ROOT / "crates/wfpmon-core/src/catalog.rs").read_text()
    body = text[text.index("pub const CALLOUTS"):]
    out = []
    for m in re.finditer(r"key: Guid::from_u128\(0x([0-9a-f_]+)\),\s*name: \"([^\"]+)\"", body):
        h = m.group(1).replace("_", "")
        out.append((f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}", m.group(2)))
    assert len(out) == 6, out
    return out


CATALOG = _catalog()
KEYS = {name: key for key, name in CATALOG}


@pytest.fixture(scope="session")
def image() -> str:
    if not IMAGE.is_file():
        pytest.fail(f"{IMAGE} does not exist: build it first (scripts/linux/build.sh)")
    return str(IMAGE)


@pytest.fixture
def engine(image):
    """A fresh boot: the image loaded, DriverEntry not yet run."""
    return FakeEngine(image)


@pytest.fixture
def loaded(engine):
    """DriverEntry has run and succeeded."""
    status = engine.driver_entry()
    assert status == 0, f"DriverEntry returned {status:#x}: " + repr(
        [(ev["name"], ev["values"]) for ev in engine.events])
    return engine
