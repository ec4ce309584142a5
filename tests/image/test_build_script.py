"""build.rs makes the empty rpcrt4.lib stub only on a build host that is not
Windows (issue 21): on a Windows host the SDK's real library is on `LIB`, and
a stub on the /LIBPATH would shadow it.

The compiled build script of the last `scripts/linux/build.sh` is run twice
here, in the same environment except for cargo's `HOST` variable: once with
this Linux host's triple, once with x86_64-pc-windows-msvc. Only the first
may write link-stubs/rpcrt4.lib and put it on the link path; apart from that
the two runs must behave alike (whatever wdk-build does next). The real
build's own run is checked too: its OUT_DIR holds the stub and its output
names the stub folder.

Run:  scripts/linux/build.sh && target/linux-wdk/venv/bin/python -m pytest tests/image
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGET_DIR = REPO_ROOT / "target"
BUILD_RS = REPO_ROOT / "build.rs"
WINDOWS_HOST = "x86_64-pc-windows-msvc"
STUB = b"!<arch>\n"  # an empty COFF archive
SEARCH_LINE = "cargo:rustc-link-search=native="


def newest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: p.stat().st_mtime, default=None)


@pytest.fixture(scope="module")
def build_script() -> Path:
    """The compiled build script of the wfpmon package (host artifact)."""
    binary = newest([p for p in TARGET_DIR.glob("*/build/wfpmon-*/build-script-build") if p.is_file()])
    if binary is None:
        pytest.fail("no compiled build script of wfpmon under target/*/build: build with scripts/linux/build.sh")
    if binary.stat().st_mtime < BUILD_RS.stat().st_mtime:
        pytest.fail(f"{binary} is older than build.rs: rebuild with scripts/linux/build.sh")
    return binary


def rustc_host() -> str:
    out = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("host:"))


# The Linux build's cargo configuration (scripts/linux/setup.sh writes it):
# its [env] table is what cargo hands the build script besides its own
# variables (WDKContentRoot, ...), and cargo metadata inside wdk-build reads it.
LINUX_CARGO_HOME = TARGET_DIR / "linux-wdk" / "cargo-home"


def cargo_config_env() -> dict[str, str]:
    config = LINUX_CARGO_HOME / "config.toml"
    if not config.is_file():
        pytest.fail(f"{config} missing: run scripts/linux/setup.sh")
    table = tomllib.loads(config.read_text(encoding="utf-8")).get("env", {})
    return {k: (v["value"] if isinstance(v, dict) else v) for k, v in table.items()}


def target_cfg_env() -> dict[str, str]:
    """CARGO_CFG_* as cargo derives them for the image: `rustc --print cfg`
    for the target with the configuration's rustflags (+crt-static, which
    wdk-build insists on)."""
    config = tomllib.loads((LINUX_CARGO_HOME / "config.toml").read_text(encoding="utf-8"))
    flags = config["target"][WINDOWS_HOST]["rustflags"]
    out = subprocess.run(["rustc", "--print", "cfg", "--target", WINDOWS_HOST, *flags],
                         capture_output=True, text=True, check=True).stdout
    values: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        values.setdefault(key, [])
        if value:
            values[key].append(value.strip('"'))
    return {f"CARGO_CFG_{k.upper()}": ",".join(v) for k, v in values.items()}


def run_build_script(binary: Path, host: str, out_dir: Path) -> subprocess.CompletedProcess[str]:
    out_dir.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGO_CFG_")}
    env.update(cargo_config_env())
    env.update(target_cfg_env())  # the image's cfg: target_os windows in both runs
    env.update({
        "CARGO_HOME": str(LINUX_CARGO_HOME),
        "HOST": host,
        "TARGET": WINDOWS_HOST,
        "OUT_DIR": str(out_dir),
        "CARGO_MANIFEST_DIR": str(REPO_ROOT),
        "CARGO_PKG_NAME": "wfpmon",
        "PROFILE": "release",
    })
    return subprocess.run([str(binary)], capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                          timeout=120, check=False)


def stub_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(SEARCH_LINE) and "link-stubs" in line]


@pytest.fixture()
def work_dir():
    """A scratch folder inside target/: wdk-build finds the workspace by
    walking up from OUT_DIR to the Cargo.lock, so OUT_DIR must be in it."""
    path = Path(tempfile.mkdtemp(prefix="build-script-test-", dir=TARGET_DIR))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_stub_only_for_a_build_host_that_is_not_windows(build_script: Path, work_dir: Path) -> None:
    tmp_path = work_dir
    host = rustc_host()
    assert "windows" not in host.split("-"), f"this test runs on a non-Windows host, not {host}"
    linux = run_build_script(build_script, host, tmp_path / "linux" / "out")
    windows = run_build_script(build_script, WINDOWS_HOST, tmp_path / "windows" / "out")

    linux_stub = tmp_path / "linux" / "out" / "link-stubs" / "rpcrt4.lib"
    assert linux_stub.is_file(), f"HOST={host}: no stub written\nstdout:\n{linux.stdout}\nstderr:\n{linux.stderr}"
    assert linux_stub.read_bytes() == STUB
    assert stub_lines(linux.stdout) == [f"{SEARCH_LINE}{linux_stub.parent}"]

    assert not (tmp_path / "windows" / "out" / "link-stubs").exists(), f"HOST={WINDOWS_HOST}: a stub was written"
    assert stub_lines(windows.stdout) == [], f"HOST={WINDOWS_HOST}: the stub folder is on the link path"

    # Both runs went through wdk-build's configuration, and everything after
    # the stub is the same in both: the host decides the stub and nothing else.
    assert linux.returncode == 0, linux.stderr
    assert windows.returncode == 0, windows.stderr
    rest = [line for line in linux.stdout.splitlines() if line not in stub_lines(linux.stdout)]
    # (wdk-build prints its rerun-if-changed lines in hash order: compare sorted)
    assert sorted(line.replace(str(tmp_path / "windows"), "<tmp>") for line in windows.stdout.splitlines()) == \
        sorted(line.replace(str(tmp_path / "linux"), "<tmp>") for line in rest)
    assert len(rest) > 0, "wdk-build printed nothing: the runs did not get that far"


def test_the_real_linux_build_linked_with_the_stub() -> None:
    outputs = [p for p in TARGET_DIR.glob(f"{WINDOWS_HOST}/release/build/wfpmon-*/output") if p.is_file()]
    output = newest(outputs)
    if output is None:
        pytest.fail(f"no build-script output under target/{WINDOWS_HOST}/release/build: run scripts/linux/build.sh")
    stub = output.parent / "out" / "link-stubs" / "rpcrt4.lib"
    assert stub.is_file() and stub.read_bytes() == STUB
    assert f"{SEARCH_LINE}{stub.parent}" in output.read_text().splitlines()
