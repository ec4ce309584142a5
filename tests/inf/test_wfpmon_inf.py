"""inf/wfpmon.inx against the checker, and against the single sources of
its names (catalog.rs, Cargo.toml)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402

import wfpfacts  # noqa: E402
from wfpinf import check, parse_inf_bytes, project_expectations, read_inf, stamp_like_stampinf  # noqa: E402

REPO = wfpfacts.REPO_ROOT
PACKAGE = wfpfacts.load_driver_package()
CATALOG = wfpfacts.load_catalog()
INX = REPO / "inf" / PACKAGE.inx_name


def problems_text(problems) -> str:
    return "\n".join(str(p) for p in problems)


def test_the_inx_exists_where_the_makefile_takes_it_from():
    # Makefile.toml copies inf/<CARGO_MAKE_CRATE_FS_NAME>.inx to <out>/<name>.inf.
    assert INX.is_file(), f"{INX} missing"


def test_inx_passes_every_check():
    problems = check(read_inf(INX), project_expectations(stamped=False))
    assert problems == [], problems_text(problems)


def test_stamped_form_passes_every_check():
    text = INX.read_bytes().decode("ascii")
    stamped = stamp_like_stampinf(text, arch="amd64", catalog=PACKAGE.cat_name)
    problems = check(parse_inf_bytes(stamped.encode("ascii"), "stamped"), project_expectations(stamped=True))
    assert problems == [], problems_text(problems)


def test_parsed_inx_installs_one_service_and_has_no_uninstall_script():
    # Removal is pnputil /delete-driver (the reverse of the install) and, if
    # the service remains, sc.exe delete: no [DefaultUninstall*] section and
    # no DelService, in the source and in the stamped form.
    text = INX.read_bytes().decode("ascii")
    stamped = parse_inf_bytes(stamp_like_stampinf(text, arch="amd64", catalog=PACKAGE.cat_name).encode("ascii"))
    for inf, decoration in ((read_inf(INX), "NT$ARCH$"), (stamped, "NTamd64")):
        names = [name.lower() for name, _ in inf.headers]
        assert f"defaultinstall.{decoration.lower()}.services" in names
        assert not [n for n in names if n.startswith("defaultuninstall")], names
        directives = [(s.name, e.key) for s in inf.sections.values() for e in s.entries if e.key]
        assert not [d for d in directives if d[1].lower() == "delservice"], directives
        adds = inf.section(f"DefaultInstall.{decoration}.Services").get_all("AddService")
        assert [a.field(0) for a in adds] == [CATALOG.service_name]


def test_inx_is_not_mistaken_for_a_stamped_inf():
    # The unstamped file must fail the stamped checks: $ARCH$ and the empty
    # DriverVer are exactly what stampinf has to replace.
    problems = check(read_inf(INX), project_expectations(stamped=True))
    text = problems_text(problems)
    assert "DriverVer (empty) is not mm/dd/yyyy,w.x.y.z" in text
    assert "stampinf variable left in a stamped INF" in text


def test_encoding_is_ascii_with_crlf():
    inf = read_inf(INX)
    assert inf.encoding == "ascii"
    assert inf.newline == "\r\n"
    assert all(b < 0x80 for b in INX.read_bytes())


def test_service_and_image_names_come_from_the_catalog():
    inf = read_inf(INX)
    add = inf.section("DefaultInstall.NT$ARCH$.Services").get("AddService")
    assert add.field(0) == CATALOG.service_name
    svc = inf.section(add.field(2))
    binary = inf.expand(svc.get("ServiceBinary").value, 0)
    assert binary == f"%13%\\{CATALOG.image_name}"


def test_image_name_is_what_wdk_build_produces():
    # wdk-build's flow names the image <CARGO_MAKE_CRATE_FS_NAME>.sys.
    assert CATALOG.image_name == PACKAGE.sys_name
    assert PACKAGE.driver_type == "WDM"


def test_catalog_file_is_the_package_cat():
    inf = read_inf(INX)
    assert inf.section("Version").get("CatalogFile").field(0) == PACKAGE.cat_name


def test_catalog_facts_are_self_consistent():
    assert len(CATALOG.callouts) == CATALOG.callout_count
    guids = list(CATALOG.all_guids().values())
    assert len(guids) == len(set(guids)), "a GUID is used twice"
    names = [name for name, _ in CATALOG.callouts]
    assert len(names) == len(set(names))
    assert CATALOG.device_name.startswith("\\Device\\")
    assert CATALOG.device_user_path == "\\\\.\\GLOBALROOT" + CATALOG.device_name


def _built_package_infs() -> list[Path]:
    target = REPO / "target"
    return sorted(target.glob(f"**/{PACKAGE.package_dir_name}/{PACKAGE.inf_name}")) if target.is_dir() else []


@pytest.mark.parametrize("inf_path", _built_package_infs() or [None])
def test_built_package_inf_if_present(inf_path):
    """On Windows after `cargo make`, the real stampinf output is checked too."""
    if inf_path is None:
        pytest.skip("no built driver package (cargo make on Windows makes one)")
    problems = check(read_inf(inf_path), project_expectations(stamped=True))
    assert problems == [], problems_text(problems)
