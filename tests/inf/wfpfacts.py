"""The facts about wfpmon that other files must agree with, read from their
single sources: crates/wfpmon-core/src/catalog.rs (names and GUIDs) and the
root Cargo.toml (the driver package's name).

Nothing here is hard-coded: every value is parsed from those files, so a
rename there shows up as a failing consistency test everywhere else.
Python 3.11 standard library only (tomllib).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CATALOG_RS = REPO_ROOT / "crates" / "wfpmon-core" / "src" / "catalog.rs"
CARGO_TOML = REPO_ROOT / "Cargo.toml"

# `pub const NAME: &str = "...";` -- a Rust string literal, escapes allowed.
_STR_CONST = re.compile(
    r'pub\s+const\s+([A-Z][A-Z0-9_]*)\s*:\s*&(?:\'static\s+)?str\s*=\s*"((?:[^"\\]|\\.)*)"\s*;'
)
# `pub const NAME: Guid = Guid::from_u128(0x...);`
_GUID_CONST = re.compile(
    r"pub\s+const\s+([A-Z][A-Z0-9_]*)\s*:\s*Guid\s*=\s*Guid::from_u128\(\s*(0x[0-9a-fA-F_]+)\s*\)\s*;"
)
# `key: Guid::from_u128(0x...), name: "..."` inside a CalloutSpec literal.
_CALLOUT = re.compile(
    r'key\s*:\s*Guid::from_u128\(\s*(0x[0-9a-fA-F_]+)\s*\)\s*,\s*name\s*:\s*"([^"]*)"'
)
_USIZE_CONST = re.compile(r"pub\s+const\s+([A-Z][A-Z0-9_]*)\s*:\s*usize\s*=\s*(\d+)\s*;")

_RUST_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "r": "\r", "t": "\t", "0": "\0"}


def rust_unescape(literal: str) -> str:
    """Decodes the simple escapes of a Rust string literal's body."""
    out = []
    chars = iter(literal)
    for ch in chars:
        if ch != "\\":
            out.append(ch)
            continue
        nxt = next(chars, "")
        if nxt not in _RUST_ESCAPES:
            raise ValueError(f"unsupported escape \\{nxt} in Rust literal {literal!r}")
        out.append(_RUST_ESCAPES[nxt])
    return "".join(out)


def guid_from_u128_literal(literal: str) -> str:
    """`0x22f6984a_dd5f_...` (Guid::from_u128's argument) -> canonical
    lower-case `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`."""
    digits = literal.lower().removeprefix("0x").replace("_", "")
    if len(digits) != 32 or not all(c in "0123456789abcdef" for c in digits):
        raise ValueError(f"not a 128-bit hex literal: {literal!r}")
    return f"{digits[0:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:32]}"


@dataclass(frozen=True)
class Catalog:
    """What catalog.rs defines."""

    strings: dict[str, str]
    guids: dict[str, str]
    callouts: tuple[tuple[str, str], ...]  # (name, guid) in registration order
    callout_count: int

    @property
    def service_name(self) -> str:
        return self.strings["SERVICE_NAME"]

    @property
    def image_name(self) -> str:
        return self.strings["IMAGE_NAME"]

    @property
    def device_name(self) -> str:
        return self.strings["DEVICE_NAME"]

    @property
    def device_user_path(self) -> str:
        return self.strings["DEVICE_USER_PATH"]

    def all_guids(self) -> dict[str, str]:
        """Every wfpmon-owned GUID by a descriptive name (provider, sublayer,
        one per callout). The management-layer GUIDs are Microsoft's, not
        ours, and are left out."""
        owned = {
            "PROVIDER_KEY": self.guids["PROVIDER_KEY"],
            "SUBLAYER_KEY": self.guids["SUBLAYER_KEY"],
        }
        for name, guid in self.callouts:
            owned[name] = guid
        return owned


def parse_catalog(text: str) -> Catalog:
    strings = {m.group(1): rust_unescape(m.group(2)) for m in _STR_CONST.finditer(text)}
    guids = {m.group(1): guid_from_u128_literal(m.group(2)) for m in _GUID_CONST.finditer(text)}
    callouts = tuple(
        (m.group(2), guid_from_u128_literal(m.group(1))) for m in _CALLOUT.finditer(text)
    )
    counts = {m.group(1): int(m.group(2)) for m in _USIZE_CONST.finditer(text)}
    for needed in ("SERVICE_NAME", "IMAGE_NAME", "DEVICE_NAME", "DEVICE_USER_PATH"):
        if needed not in strings:
            raise ValueError(f"catalog.rs: no `pub const {needed}: &str` found")
    for needed in ("PROVIDER_KEY", "SUBLAYER_KEY"):
        if needed not in guids:
            raise ValueError(f"catalog.rs: no `pub const {needed}: Guid` found")
    if "CALLOUT_COUNT" not in counts:
        raise ValueError("catalog.rs: no `pub const CALLOUT_COUNT: usize` found")
    return Catalog(strings, guids, callouts, counts["CALLOUT_COUNT"])


def load_catalog(path: Path = CATALOG_RS) -> Catalog:
    return parse_catalog(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class DriverPackage:
    """The root Cargo.toml's driver package, and the file names wdk-build's
    cargo-make flow derives from it (CARGO_MAKE_CRATE_FS_NAME is the package
    name with '-' replaced by '_')."""

    name: str
    driver_type: str | None

    @property
    def fs_name(self) -> str:
        return self.name.replace("-", "_")

    @property
    def sys_name(self) -> str:
        return f"{self.fs_name}.sys"

    @property
    def inf_name(self) -> str:
        return f"{self.fs_name}.inf"

    @property
    def inx_name(self) -> str:
        return f"{self.fs_name}.inx"

    @property
    def cat_name(self) -> str:
        return f"{self.fs_name}.cat"

    @property
    def package_dir_name(self) -> str:
        return f"{self.fs_name}_package"


def load_driver_package(path: Path = CARGO_TOML) -> DriverPackage:
    with path.open("rb") as f:
        manifest = tomllib.load(f)
    package = manifest["package"]
    driver_model = package.get("metadata", {}).get("wdk", {}).get("driver-model", {})
    return DriverPackage(package["name"], driver_model.get("driver-type"))
