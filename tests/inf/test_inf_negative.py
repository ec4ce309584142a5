"""The checker must fail when it should: each test breaks one thing in a copy
of inf/wfpmon.inx (made here, in memory) and asserts that the checker reports
it at the right line with the right message."""

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402

import wfpfacts  # noqa: E402
from wfpinf import check, parse_inf_bytes, project_expectations, stamp_like_stampinf  # noqa: E402

HERE = Path(__file__).resolve().parent
INX = wfpfacts.REPO_ROOT / "inf" / wfpfacts.load_driver_package().inx_name
GOOD = INX.read_bytes().decode("ascii")
NL = "\r\n"


def good_lines() -> list[str]:
    return GOOD.split(NL)[:-1]


def find(rows: list[str], exact: str) -> int:
    """0-based index of the one line whose text (comment and blanks removed)
    is `exact`."""
    hits = [i for i, r in enumerate(rows) if r.split(";")[0].strip() == exact]
    assert len(hits) == 1, f"{exact!r} found {len(hits)} times in {INX}"
    return hits[0]


def replace_line(exact: str, new: str) -> tuple[str, int]:
    rows = good_lines()
    i = find(rows, exact)
    rows[i] = new
    return NL.join(rows) + NL, i + 1


def delete_line(exact: str) -> str:
    rows = good_lines()
    del rows[find(rows, exact)]
    return NL.join(rows) + NL


def line_of(text: str, exact: str) -> int:
    return find(text.split(NL), exact) + 1


def run(text: str, stamped: bool = False, encoding: str = "ascii"):
    data = text.encode(encoding) if encoding != "utf-16-le" else b"\xff\xfe" + text.encode(encoding)
    return check(parse_inf_bytes(data, "broken"), project_expectations(stamped=stamped))


def assert_reported(problems, line: int, fragment: str):
    found = [p for p in problems if p.line == line and fragment in p.message]
    listing = "\n".join(str(p) for p in problems) or "(no problems)"
    assert found, f"expected line {line}: ...{fragment}...; checker said:\n{listing}"


def test_the_good_file_is_clean():
    # Baseline for every test below: each problem they see is one they made.
    assert run(GOOD) == []


# One edited line -> (line of the edit, message fragment).
ONE_LINE_BREAKS = [
    ("AddService = wfpmon,,wfpmon.Service", "AddService = wfpmn,,wfpmon.Service",
     "AddService name is wfpmn, must be wfpmon (SERVICE_NAME in catalog.rs)"),
    ("AddService = wfpmon,,wfpmon.Service", "AddService = wfpmon,,wfpmon.Svc",
     "AddService names [wfpmon.Svc], which does not exist"),
    ("ServiceType   = 1", "ServiceType   = 2", "ServiceType = 2: must be 1 (SERVICE_KERNEL_DRIVER)"),
    ("StartType     = 3", "StartType     = 0", "StartType = 0: must be 3 (SERVICE_DEMAND_START)"),
    ("ErrorControl  = 1", "ErrorControl  = 3", "ErrorControl = 3: must be 1 (SERVICE_ERROR_NORMAL)"),
    ("ServiceBinary = %13%\\wfpmon.sys", "ServiceBinary = %13%\\wfpmon2.sys",
     "ServiceBinary file wfpmon2.sys is not wfpmon.sys (IMAGE_NAME in catalog.rs)"),
    ("ServiceBinary = %13%\\wfpmon.sys", "ServiceBinary = %12%\\wfpmon.sys",
     "ServiceBinary %12%\\wfpmon.sys: must be %13%\\wfpmon.sys (the driver store)"),
    ("ClassGuid   = {57465043-616C-6C6F-7574-5F636C617373}",
     "ClassGuid   = {4D36E972-E325-11CE-BFC1-08002BE10318}",
     "ClassGuid {4D36E972-E325-11CE-BFC1-08002BE10318} is not the WFPCALLOUTS class GUID"),
    ("Class       = WFPCALLOUTS", "Class       = Net", "Class is Net, must be WFPCALLOUTS"),
    ("PnpLockdown = 1", "PnpLockdown = 0", "PnpLockdown is 0, must be 1"),
    ("CatalogFile = wfpmon.cat", "CatalogFile = other.cat", "CatalogFile is other.cat, must be wfpmon.cat"),
    ('Signature   = "$WINDOWS NT$"', 'Signature   = "$Chicago$"', 'must be "$WINDOWS NT$"'),
    ("Provider    = %ProviderName%", "Provider    = %ProviderNmae%",
     "%ProviderNmae% is not defined in [Strings]"),
    ("wfpmon.sys = 1,,", "wfpmon.sys = 2,,", "wfpmon.sys: disk id 2 is not in [SourceDisksNames]"),
    ("wfpmon.DriverFiles = 13", "wfpmon.DriverFiles = 12",
     "wfpmon.DriverFiles = 12: must be 13 (run from the driver store)"),
    ("DefaultDestDir     = 13", "DefaultDestDir     = 11",
     "DefaultDestDir = 11: must be 13 (run from the driver store)"),
    ("CopyFiles = wfpmon.DriverFiles", "CopyFiles = wfpmon.Files",
     "CopyFiles names [wfpmon.Files], which does not exist"),
    ("[DefaultInstall.NT$ARCH$.Services]", "[DefaultInstall.NTx86.Services]",
     "[DefaultInstall.NTx86.Services]: decoration NTx86 does not match [DefaultInstall.NT$ARCH$]"),
    ("[DefaultInstall.NT$ARCH$]", "[DefaultInstall.NTamd64]",
     "[DefaultInstall.NTamd64]: decoration NTamd64, expected NT$ARCH$"),
    ("DisplayName   = %ServiceDisplayName%", 'DisplayName   = ""', "DisplayName is empty"),
    ('ProviderName       = "wfpmon"', 'ProviderName       = "wfpmon', "unterminated quoted string"),
]


@pytest.mark.parametrize(("old", "new", "fragment"), ONE_LINE_BREAKS,
                         ids=[b[2][:50] for b in ONE_LINE_BREAKS])
def test_one_broken_line_is_reported_at_that_line(old, new, fragment):
    text, line = replace_line(old, new)
    assert_reported(run(text), line, fragment)


def test_copied_file_outside_the_package():
    text, line = replace_line("wfpmon.sys", "other.sys")
    problems = run(text)
    assert_reported(problems, line, "other.sys is copied but not listed in [SourceDisksFiles]")
    assert_reported(problems, line, "other.sys is not a file of the driver package (wfpmon.sys)")
    assert_reported(problems, line_of(text, "[DefaultInstall.NT$ARCH$]"),
                    "wfpmon.sys is not copied by [DefaultInstall.NT$ARCH$]")


def test_source_file_that_the_package_does_not_contain():
    text, line = replace_line("wfpmon.sys = 1,,", "wfpmon.dll = 1,,")
    problems = run(text)
    assert_reported(problems, line, "wfpmon.dll is not a file of the driver package (wfpmon.sys)")
    assert_reported(problems, line_of(text, "wfpmon.sys"),
                    "wfpmon.sys is copied but not listed in [SourceDisksFiles]")


def test_decoration_mismatch_also_reports_the_missing_services_section():
    text, _ = replace_line("[DefaultInstall.NT$ARCH$.Services]", "[DefaultInstall.NTx86.Services]")
    assert_reported(run(text), line_of(text, "[DefaultInstall.NT$ARCH$]"),
                    "has no matching [DefaultInstall.NT$ARCH$.Services] section")


@pytest.mark.parametrize(("key", "fragment"), [
    ("StartType     = 3", "[wfpmon.Service] has no StartType (must be 3, SERVICE_DEMAND_START)"),
    ("ServiceType   = 1", "[wfpmon.Service] has no ServiceType (must be 1, SERVICE_KERNEL_DRIVER)"),
    ("ErrorControl  = 1", "[wfpmon.Service] has no ErrorControl (must be 1, SERVICE_ERROR_NORMAL)"),
    ("ServiceBinary = %13%\\wfpmon.sys", "[wfpmon.Service] has no ServiceBinary"),
    ("Description   = %ServiceDescription%", "[wfpmon.Service] has no Description"),
])
def test_missing_service_key_is_reported_at_the_section_header(key, fragment):
    text = delete_line(key)
    assert_reported(run(text), line_of(text, "[wfpmon.Service]"), fragment)


@pytest.mark.parametrize(("key", "fragment"), [
    ("PnpLockdown = 1", "[Version] has no PnpLockdown (must be 1)"),
    ("CatalogFile = wfpmon.cat", "[Version] has no CatalogFile (must be wfpmon.cat)"),
    ("ClassGuid   = {57465043-616C-6C6F-7574-5F636C617373}", "[Version] has no ClassGuid"),
    ("DriverVer   =", "[Version] has no DriverVer"),
])
def test_missing_version_key_is_reported_at_the_version_header(key, fragment):
    text = delete_line(key)
    assert_reported(run(text), line_of(text, "[Version]"), fragment)


def test_undefined_string_is_reported_where_it_is_used():
    text = delete_line('ServiceDisplayName = "wfpmon WFP flow monitor"')
    assert_reported(run(text), line_of(text, "DisplayName   = %ServiceDisplayName%"),
                    "%ServiceDisplayName% is not defined in [Strings]")


# The legacy uninstall script that earlier versions of the INF carried; the
# checker must refuse it (decision and sources: wfpinf._check_uninstall).
LEGACY_UNINSTALL = NL.join([
    "[DefaultUninstall.NT$ARCH$]",
    "LegacyUninstall = 1",
    "",
    "[DefaultUninstall.NT$ARCH$.Services]",
    "DelService = wfpmon,0x00000200",
    "",
]) + NL


def with_legacy_uninstall() -> str:
    rows = good_lines()
    at = find(rows, "[Strings]")
    return NL.join(rows[:at]) + NL + LEGACY_UNINSTALL + NL.join(rows[at:]) + NL


def test_the_inx_has_no_uninstall_script():
    inf = parse_inf_bytes(GOOD.encode("ascii"), "good")
    assert not [name for name, _ in inf.headers if name.lower().startswith("defaultuninstall")]
    assert not [e for s in inf.sections.values() for e in s.get_all("DelService")]


def test_legacy_uninstall_sections_are_rejected():
    text = with_legacy_uninstall()
    problems = run(text)
    for header in ("[DefaultUninstall.NT$ARCH$]", "[DefaultUninstall.NT$ARCH$.Services]"):
        assert_reported(problems, line_of(text, header), "needs no DefaultUninstall section")
    assert_reported(problems, line_of(text, "DelService = wfpmon,0x00000200"),
                    "DelService is not valid in a Universal or Windows driver package")
    assert len(problems) == 3, "\n".join(map(str, problems))


def test_undecorated_default_uninstall_is_rejected_once():
    text = with_legacy_uninstall().replace("[DefaultUninstall.NT$ARCH$]", "[DefaultUninstall]")
    line = line_of(text, "[DefaultUninstall]")
    assert [p.message for p in run(text) if p.line == line] == [
        "[DefaultUninstall]: a primitive driver for Windows 10 2004+ needs no DefaultUninstall section "
        "(uninstalling the package reverses its install; LegacyUninstall=1 only serves systems before 1903)"]


def test_del_service_anywhere_is_rejected():
    text, line = replace_line("AddService = wfpmon,,wfpmon.Service",
                              "AddService = wfpmon,,wfpmon.Service" + NL + "DelService = wfpmon")
    assert_reported(run(text), line + 1, "[DefaultInstall.NT$ARCH$.Services]: DelService is not valid")


def test_stamped_legacy_uninstall_is_rejected_too():
    stamped = stamp_like_stampinf(with_legacy_uninstall(), catalog="wfpmon.cat")
    problems = run(stamped, stamped=True)
    assert_reported(problems, line_of(stamped, "[DefaultUninstall.NTamd64]"), "needs no DefaultUninstall")
    assert_reported(problems, line_of(stamped, "DelService = wfpmon,0x00000200"), "DelService is not valid")


def test_manufacturer_section_is_rejected():
    text = GOOD + "[Manufacturer]" + NL + "%ProviderName% = Models,NT$ARCH$" + NL
    assert_reported(run(text), line_of(text, "[Manufacturer]"),
                    "a primitive driver INF must not have a [Manufacturer] section")


def test_undecorated_default_install_is_rejected():
    text, line = replace_line("[DefaultInstall.NT$ARCH$]", "[DefaultInstall]")
    problems = run(text)
    assert_reported(problems, line, "[DefaultInstall] must be architecture-decorated")


def test_second_add_service_is_rejected():
    text, line = replace_line("AddService = wfpmon,,wfpmon.Service",
                              "AddService = wfpmon,,wfpmon.Service" + NL + "AddService = other,,wfpmon.Service")
    assert_reported(run(text), line + 1, "more than one AddService")


def test_repeated_section_is_reported_at_the_repeat():
    text = GOOD + "[wfpmon.Service]" + NL + "StartType = 3" + NL
    rows = text.split(NL)
    repeat = max(i for i, r in enumerate(rows) if r == "[wfpmon.Service]") + 1
    assert_reported(run(text), repeat, "section [wfpmon.Service] appears again")


def test_continued_line_reports_its_first_physical_line():
    # The logical line AddService = <name>,,<section> split over two lines,
    # with the wrong service name on the second one.
    text, line = replace_line("AddService = wfpmon,,wfpmon.Service",
                              "AddService = \\" + NL + "    wfpmn,,wfpmon.Service")
    assert_reported(run(text), line, "AddService name is wfpmn")
    # and the same continuation with the right name is fine
    ok, _ = replace_line("AddService = wfpmon,,wfpmon.Service",
                         "AddService = \\" + NL + "    wfpmon,,wfpmon.Service")
    assert run(ok) == []


# --- encodings ---------------------------------------------------------------

def test_non_ascii_character_is_reported_at_its_line():
    text, line = replace_line("ServiceDescription = "
                              '"Windows Filtering Platform callout driver that tracks flows and counts their traffic"',
                              'ServiceDescription = "caf\u00e9 driver"')
    assert_reported(run(text, encoding="utf-8"), line,
                    "non-ASCII byte 0xC3: an INF with non-ASCII characters must be saved as UTF-16 LE")


def test_utf8_bom_is_reported_at_line_1():
    problems = check(parse_inf_bytes(b"\xef\xbb\xbf" + GOOD.encode("ascii")), project_expectations())
    assert_reported(problems, 1, "UTF-8 byte-order mark")


def test_utf16le_copy_is_accepted_and_errors_keep_their_line():
    assert run(GOOD, encoding="utf-16-le") == []
    text, line = replace_line("StartType     = 3", "StartType     = 2")
    assert_reported(run(text, encoding="utf-16-le"), line, "StartType = 2: must be 3")


def test_mixed_line_ends_are_reported():
    rows = good_lines()
    i = find(rows, "[Strings]")
    text = NL.join(rows[:i]) + NL + rows[i] + "\n" + NL.join(rows[i + 1:]) + NL
    assert_reported(run(text), i + 1, "mixed line ends: this line ends in LF, line 1 in CRLF")


# --- stamped form ------------------------------------------------------------

def test_stamped_inf_without_driverver_is_reported():
    stamped = stamp_like_stampinf(GOOD, catalog="wfpmon.cat")
    rows = stamped.split(NL)
    i = next(n for n, r in enumerate(rows) if r.startswith("DriverVer"))
    rows[i] = "DriverVer   = 13/45/2025,1.2.3"
    assert_reported(run(NL.join(rows), stamped=True), i + 1,
                    "DriverVer 13/45/2025,1.2.3 is not mm/dd/yyyy,w.x.y.z")


def test_stamped_inf_with_a_left_over_arch_variable_is_reported():
    stamped = stamp_like_stampinf(GOOD, catalog="wfpmon.cat")
    text = stamped.replace("[DefaultInstall.NTamd64.Services]", "[DefaultInstall.NT$ARCH$.Services]")
    line = line_of(text, "[DefaultInstall.NT$ARCH$.Services]")
    problems = run(text, stamped=True)
    assert_reported(problems, line, "stampinf variable left in a stamped INF")
    assert_reported(problems, line, "decoration NT$ARCH$ does not match [DefaultInstall.NTamd64]")


# --- command line ------------------------------------------------------------

def test_command_line_names_file_and_line_and_fails(tmp_path):
    text, line = replace_line("ServiceType   = 1", "ServiceType   = 2")
    broken = tmp_path / "broken.inx"
    broken.write_bytes(text.encode("ascii"))
    result = subprocess.run([sys.executable, str(HERE / "wfpinf.py"), str(broken)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert f"{broken}:{line}: ServiceType = 2: must be 1 (SERVICE_KERNEL_DRIVER)" in result.stdout

    result = subprocess.run([sys.executable, str(HERE / "wfpinf.py"), str(INX)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
