"""Snapshot reset in the real guest (--reset snapshot): the first boot is
saved once its executor is ready; a life that ends (a kernel report, or the
caller ending it) gives way to a restore of that snapshot, not a boot, and a
restored guest is as good as a fresh one. A snapshot that is gone or corrupt
is said so, and the next life boots.
"""

import time

import pytest

from svmfuzz import native, protocol, runner, vm
from svmfuzz.paths import build_dir

pytestmark = pytest.mark.vm

PROGRAMS = {
    # Pages to the device and back through the CPU's fault: the driver's
    # counters grow with every run, and start again from the snapshot's.
    "migrate": """
        mmap buf=0 pages=4 kind=anon prot=rw
        write buf=0 off=0 pages=4 seed=1
        mirror buf=0 off=0 pages=4 write=yes
        migrate_to_dev buf=0 off=0 pages=4
        verify buf=0 off=0 pages=4 seed=1
        munmap buf=0 off=0 pages=4
    """,
    # A device read the driver's fault worker sits on past the hung-task
    # detector's timeout: a kernel report, which ends the life.
    "hang": """
        mmap buf=0 pages=1 kind=anon prot=rw
        write buf=0 off=0 pages=1 seed=1
        dev_read buf=0 off=0 pages=1
    """,
}
APPEND = ["sysctl.kernel.hung_task_timeout_secs=3"]
OP_TIMEOUT_MS = 15000


@pytest.fixture(scope="module")
def programs() -> dict[str, bytes]:
    return runner.encode_texts(PROGRAMS)


@pytest.fixture
def guest(guest_artifacts, request):
    logged = []

    def log(line):
        print(line)
        logged.append(line)

    cfg = runner.RunnerConfig(
        vm.config(guest_artifacts, build_dir() / "vm" / f"reset_vm_{request.node.name}",
                  accel="tcg", extra_append=APPEND),
        op_timeout_ms=OP_TIMEOUT_MS, reset=native.Reset.SNAPSHOT)
    with runner.Runner(cfg, log) as r:
        r.logged = logged
        yield r


def clean(outcome: runner.Outcome) -> runner.Outcome:
    assert outcome.result is not None, outcome.lost
    assert outcome.findings == [] and outcome.result.status == protocol.Status.OK, \
        runner.describe(outcome)
    return outcome


def drv(outcome: runner.Outcome, counter: protocol.Drv) -> int:
    return outcome.result.counters[protocol.HW_COUNTERS + counter]


def test_a_kernel_report_gives_way_to_a_restore_as_good_as_a_boot(guest, programs):
    first = clean(guest.run(programs["migrate"]))
    booted = first.life
    assert not booted.restored
    assert any("runner: snapshot taken in" in line for line in guest.logged), guest.logged
    later = clean(guest.run(programs["migrate"]))
    assert drv(later, protocol.Drv.TO_DEV) > drv(first, protocol.Drv.TO_DEV)

    o = guest.run(programs["hang"], protocol.Knobs(fault_delay_ms=10000))
    assert o.title().startswith("INFO: task hung in"), runner.describe(o)
    assert booted.end == f"kernel: {o.title()}"

    start = time.monotonic()
    again = clean(guest.run(programs["migrate"]))
    seconds = time.monotonic() - start
    life = again.life
    assert life.restored and life.index == booted.index + 1, runner.describe(again)
    print(f"reset_vm: boot {booted.boot_seconds:.1f} s, restore {life.boot_seconds:.2f} s; "
          f"the program after the restore took {seconds:.1f} s")
    assert life.boot_seconds < booted.boot_seconds
    # The guest is back where the snapshot was: the driver's counters start
    # again from there, and the console of the new life holds no report.
    assert drv(again, protocol.Drv.TO_DEV) == drv(first, protocol.Drv.TO_DEV)
    assert drv(again, protocol.Drv.VRAM_FREE) == drv(first, protocol.Drv.VRAM_FREE)
    report = "blocked for more than"  # the hung-task detector's own words
    text = life.console_log.read_text(errors="replace")
    assert report not in text and life.console_log != booted.console_log
    assert report in booted.console_log.read_text(errors="replace")
    # Ended by hand, once more: a second restore from the same snapshot.
    guest.end_life("test: once more")
    clean(guest.run(programs["migrate"]))
    assert guest.life.restored and guest.life.index == life.index + 1


def test_a_restore_after_a_long_life_leaves_the_guest_clock_whole(guest, programs):
    """The soft-lockup detector fires when sched_clock leaps past twice its
    threshold (20 s): a restore that kept the ended life's TSC made it report
    an idle CPU stuck for as long as the life had lasted."""
    clean(guest.run(programs["migrate"]))
    time.sleep(30)
    guest.end_life("test: after a long life")
    clean(guest.run(programs["migrate"]))
    life = guest.life
    assert life.restored
    # Long enough for the detector's timer (every 4 s) to look on each CPU.
    time.sleep(6)
    clean(guest.run(programs["migrate"]))
    text = life.console_log.read_text(errors="replace")
    for report in ("soft lockup", "rcu_sched", "rcu_preempt", "Long readout interval"):
        assert report not in text, text[-3000:]


def _delete_snapshot(r: runner.Runner) -> None:
    said = vm.qmp(r.qmp_socket, "human-monitor-command", **{"command-line": "delvm svmfuzz-ready"})
    assert said == "", said


@pytest.mark.parametrize("damage", ["gone", "corrupt"])
def test_a_snapshot_gone_or_corrupt_gives_way_to_a_boot(guest, programs, damage):
    first = clean(guest.run(programs["migrate"]))
    disk = first.life.console_log.parent / f"{guest.cfg.vm.name}.snapshots.qcow2"
    assert disk.is_file()
    if damage == "gone":
        _delete_snapshot(guest)
    else:
        # Garbage over everything past the image's header and tables.
        size = disk.stat().st_size
        with open(disk, "r+b") as f:
            f.seek(1 << 20)
            f.write(bytes([0xa5]) * (size - (1 << 20)))
    guest.end_life(f"test: snapshot {damage}")
    after = clean(guest.run(programs["migrate"]))
    assert not after.life.restored and after.life.index == first.life.index + 1
    assert any("runner: restore failed, booting instead: " in line for line in guest.logged), \
        guest.logged
    # The new boot takes a snapshot of its own, which the next life restores.
    guest.end_life("test: after the boot")
    clean(guest.run(programs["migrate"]))
    assert guest.life.restored
