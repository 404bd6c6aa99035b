"""Oversized ranges through the driver's range ioctls in the real guest
(guest-driver/tests/huge_ranges.c): the whole address space with a few pages
mapped, ranges past TASK_SIZE and ranges whose end wraps, on /dev/svmdev0 and
on the test_hmm interface, /dev/hmm_dmirror0. Each call comes back, with a
result or a clean error, within a few seconds, and the kernel reports nothing:
a soft lockup or WARNING of our own driver would be a false finding.

The program reaches the guest as a static binary in an archive appended to
the initramfs (image.extend), run by init's svmfuzz.run=extra:NAME.
"""

import re
import shutil
import subprocess

import pytest

from svmfuzz import native, selftest, vm
from svmfuzz.oracles import console
from svmfuzz.paths import REPO_ROOT, build_dir

pytestmark = pytest.mark.vm

SOURCE = REPO_ROOT / "guest-driver" / "tests" / "huge_ranges.c"
NAME = "huge_ranges"
# Every call the program makes, in its order.
SVMDEV_CASES = [
    "map_present_all", "release_all", "release_last_page", "release_past_end", "release_past",
    "release_kernel", "release_wrap", "release_npages_wrap", "release_npages_max",
    "map_present_past", "map_present_kernel", "map_present_wrap", "map_present_npages_wrap",
    "mirror_all", "mirror_wrap", "migrate_all", "migrate_to_sys_all", "migrate_wrap",
    "exclusive_all", "exclusive_wrap",
    "snapshot_top", "snapshot_all", "snapshot_past", "snapshot_wrap",
]
DMIRROR_CASES = [
    "dmirror_read_4g", "dmirror_write_4g", "dmirror_read_all", "dmirror_read_past",
    "dmirror_read_kernel", "dmirror_read_wrap", "dmirror_write_npages_wrap",
    "dmirror_snapshot_all", "dmirror_snapshot_past_end", "dmirror_snapshot_wrap",
    "dmirror_migrate_all", "dmirror_migrate_to_sys_all", "dmirror_migrate_wrap",
    "dmirror_exclusive_all", "dmirror_check_exclusive_all", "dmirror_release_wrap",
    "dmirror_release_all",
]
CASES = SVMDEV_CASES + DMIRROR_CASES + ["map_present_all_again"]
CASE = re.compile(r"huge_ranges: (\w+): (\w+) in (\d+) ms")
# Well past what bounded work takes under TCG, far below a per-page or
# per-2-MiB walk of the address space.
CASE_MS = 5000
GUEST_SECONDS = 150


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("no gcc to build the program")
    binary = tmp_path_factory.mktemp("huge_ranges") / NAME
    subprocess.run(["gcc", "-static", "-O1", "-Wall", "-Werror", "-o", str(binary),
                    str(SOURCE)], check=True)
    return binary


@pytest.fixture(scope="module")
def artifacts(extend_guest, program):
    return extend_guest({NAME: program}, program.parent)


def test_oversized_ranges_return_soon_and_quietly(artifacts):
    # Our driver alone, with its test_hmm interface: test_hmm would take the
    # same /dev/hmm_dmirror0.
    cfg = vm.config(artifacts, build_dir() / "vm" / "huge_ranges_vm_test", name="huge-ranges",
                    accel="tcg", run=f"extra:{NAME}",
                    extra_append=selftest.DRIVER_APPEND["svmdev"])
    with native.Vm(cfg) as guest:
        exited = guest.wait_exit(GUEST_SECONDS)
        text = guest.console_log.read_text(errors="replace")
    log = guest.console_log
    assert exited is not None, f"the guest still ran after {GUEST_SECONDS} s: {log}"
    assert "huge_ranges: done" in text, log
    assert f"svmfuzz-init: {NAME} exited with status 0" in text, log

    results = {m[1]: (m[2], int(m[3])) for m in CASE.finditer(text)}
    assert [c for c in CASES if c not in results] == [], log
    slow = {c: ms for c, (_, ms) in results.items() if ms >= CASE_MS}
    assert slow == {}, log

    # Calls that succeeded did their work: a mirror of the whole address space
    # mapped the sparse pages, and its release unmapped them.
    if results["map_present_all"][0] == "ok":
        assert re.search(r"huge_ranges: map_present_all: (\d+) of \1 sparse pages mapped", text), log
    if results["release_all"][0] == "ok":
        assert re.search(r"huge_ranges: release_all: 0 of \d+ sparse pages mapped", text), log
    balance = re.search(r"huge_ranges: notifier starts (\d+) ends (\d+): (\w+)", text)
    assert balance and balance[3] == "balanced" and balance[1] == balance[2] != "0", log

    assert [f.title for f in console.parse(text)] == [], log
    for report in ("soft lockup", "WARNING:", "BUG:"):
        assert report not in text, log
