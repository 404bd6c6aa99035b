"""Programs reach further in the real guest: driver files opened with a
personality and a device of their own (open_dev, file=N), two files and so
two notifier sets on one mm, a child killed with pidfd_send_signal and its
memory reaped with process_mrelease while it holds device mappings, the OOM
killer's way to the same reaper, the madvise advice that populate or
collapse memory the device maps or holds, CPU-fault windows of several sizes,
and failed allocations and copies in the CPU-fault path. On a correct kernel each program
ends cleanly, with no finding.
"""

import errno
import signal

import pytest

from svmfuzz import protocol, runner, vm
from svmfuzz.oracle_vm_test import clean
from svmfuzz.paths import build_dir

pytestmark = pytest.mark.vm

PERSONALITIES = ("none", "refuse_nonblock", "block_shared", "slow", "serial_to_ram",
                 "serial_to_ram_page", "serial_to_ram_2m")

# Mirror, migrate, device writes and reads through file 1, with invalidations
# of every kind the CPU side makes (drop, protection change, unmap).
PERSONALITY = """
    mmap buf=0 pages=64 kind=anon prot=rw
    write buf=0 off=0 pages=64 seed=1
    open_dev file=1 dev=0 personality={p}
    mirror buf=0 off=0 pages=32 write=yes file=1
    migrate_to_dev buf=0 off=32 pages=32 file=1
    dev_write buf=0 off=0 pages=8 seed=2 file=1
    madvise buf=0 off=16 pages=8 advice=dontneed
    mprotect buf=0 off=24 pages=8 prot=r
    dev_read buf=0 off=32 pages=32 file=1
    verify buf=0 off=0 pages=8 seed=2
    verify buf=0 off=32 pages=32 seed=1
    munmap buf=0 off=0 pages=64
"""
P_OPEN, P_MIRROR, P_MIGRATE, P_MADVISE, P_VERIFY = 2, 3, 4, 6, 9

# A child mirrors and migrates its own buffer through a file of the
# personality, then sleeps; the parent kills it and reaps its memory at once,
# racing the child's own exit, then goes on using the device itself.
REAPER = """
    mmap buf=0 pages=64 kind=anon prot=rw
    write buf=0 off=0 pages=64 seed=3
    fork wait=no {{
      mmap buf=1 pages=256 kind=anon prot=rw
      write buf=1 off=0 pages=256 seed=4
      open_dev file=1 dev=0 personality={p}
      mirror buf=1 off=0 pages=128 write=yes file=1
      migrate_to_dev buf=1 off=128 pages=128 file=1
      sleep us=1000000
      sleep us=1000000
    }}
    sleep us=1000000
    sleep us=500000
    kill_child child=0
    mrelease child=0
    mirror buf=0 off=0 pages=64 write=no
    dev_read buf=0 off=0 pages=64
    verify buf=0 off=0 pages=64 seed=3
"""
R_MIGRATE, R_SLEEPS, R_KILL, R_MRELEASE, R_DEV_READ = 7, (8, 9), 12, 13, 15

# The CPU-fault path back from the device with its copy failed (the access
# gets SIGBUS: EFAULT), then with its allocation failed three times (the
# fault is retried until it succeeds); the data stays whole. The two knobs
# are set on two files of the process: a file's knobs op sets all of its
# counts again, so one file would arm the copy failure a second time.
TO_RAM_FAIL = """
    mmap buf=0 pages=16 kind=anon prot=rw
    write buf=0 off=0 pages=16 seed=13
    migrate_to_dev buf=0 off=0 pages=16
    drv_fail_copy count=1
    read buf=0 off=0 pages=1
    open_dev file=1 dev=0 personality=none
    drv_fail_alloc count=3 file=1
    verify buf=0 off=0 pages=16 seed=13
    munmap buf=0 off=0 pages=16
"""

PROGRAMS = {
    "to_ram_fail": TO_RAM_FAIL,
    # Files 1 and 2 on one mm: two device contexts, two personalities'
    # notifiers next to the interval notifiers of both, and file 0 besides.
    "two_files": """
        mmap buf=0 pages=32 kind=anon prot=rw
        write buf=0 off=0 pages=32 seed=5
        open_dev file=1 dev=0 personality=slow
        open_dev file=2 dev=0 personality=refuse_nonblock
        mirror buf=0 off=0 pages=32 write=no file=1
        mirror buf=0 off=0 pages=32 write=yes file=2
        migrate_to_dev buf=0 off=0 pages=16 file=2
        dev_read buf=0 off=0 pages=32 file=1
        dev_read buf=0 off=0 pages=32
        madvise buf=0 off=8 pages=8 advice=pageout
        verify buf=0 off=0 pages=32 seed=5
        munmap buf=0 off=0 pages=32
    """,
    # Pages in device 1's memory read by device 0: device 0 faults them back
    # to system memory first.
    "two_devices": """
        mmap buf=0 pages=16 kind=anon prot=rw
        write buf=0 off=0 pages=16 seed=6
        open_dev file=1 dev=1 personality=none
        migrate_to_dev buf=0 off=0 pages=16 file=1
        dev_read buf=0 off=0 pages=16
        dev_write buf=0 off=0 pages=4 seed=7 file=1
        verify buf=0 off=0 pages=4 seed=7
        verify buf=0 off=4 pages=12 seed=6
    """,
    # A fork child binds its own file of its parent's personality, to its mm.
    "fork_file": """
        mmap buf=0 pages=16 kind=anon prot=rw
        write buf=0 off=0 pages=16 seed=8
        open_dev file=1 dev=0 personality=block_shared
        mirror buf=0 off=0 pages=16 write=no file=1
        fork wait=yes {
          mirror buf=0 off=0 pages=16 write=yes file=1
          dev_write buf=0 off=0 pages=16 seed=9 file=1
          verify buf=0 off=0 pages=16 seed=9
        }
        dev_read buf=0 off=0 pages=16 file=1
        verify buf=0 off=0 pages=16 seed=8
    """,
    # The child holds device mappings and device memory when the OOM killer
    # takes it; the reaper unmaps them with non-blocking notifiers.
    "oom_kill": """
        mmap buf=0 pages=64 kind=anon prot=rw
        write buf=0 off=0 pages=64 seed=10
        fork wait=yes {
          mmap buf=1 pages=256 kind=anon prot=rw
          write buf=1 off=0 pages=256 seed=11
          open_dev file=1 dev=0 personality=refuse_nonblock
          mirror buf=1 off=0 pages=128 write=yes file=1
          migrate_to_dev buf=1 off=128 pages=128 file=1
          oom_kill
          sleep us=100000
        }
        mirror buf=0 off=0 pages=64 write=yes
        verify buf=0 off=0 pages=64 seed=10
    """,
    # Advice on memory the device maps (0..255) and holds (256..511) in a
    # THP-aligned buffer: population faults device pages back through
    # migrate_to_ram, collapse swaps them in to build a huge page.
    "madvise": """
        mmap buf=0 pages=512 kind=huge prot=rw
        write buf=0 off=0 pages=512 seed=12
        mirror buf=0 off=0 pages=256 write=yes
        migrate_to_dev buf=0 off=256 pages=256
        madvise buf=0 off=0 pages=512 advice=willneed
        madvise buf=0 off=256 pages=64 advice=populate_read
        madvise buf=0 off=320 pages=64 advice=populate_write
        migrate_to_dev buf=0 off=256 pages=128
        madvise buf=0 off=0 pages=512 advice=collapse
        dev_read buf=0 off=0 pages=512
        verify buf=0 off=0 pages=512 seed=12
    """,
}
PROGRAMS.update({f"pers_{p}": PERSONALITY.format(p=p) for p in PERSONALITIES})
PROGRAMS.update({f"reaper_{p}": REAPER.format(p=p) for p in PERSONALITIES})
OP_TIMEOUT_MS = 15000


@pytest.fixture(scope="module")
def programs() -> dict[str, bytes]:
    return runner.encode_texts(PROGRAMS)


@pytest.fixture(scope="module")
def guest(guest_artifacts):
    cfg = runner.RunnerConfig(
        vm.config(guest_artifacts, build_dir() / "vm" / "reach_vm_test", accel="tcg", devices=2),
        op_timeout_ms=OP_TIMEOUT_MS)
    with runner.Runner(cfg, print) as r:
        yield r


def ok(outcome: runner.Outcome, *indexes: int) -> None:
    for i in indexes:
        op = outcome.result.ops[i]
        assert op.err == 0 and op.flags & protocol.OpFlag.DONE, (i, runner.describe(outcome))


@pytest.mark.parametrize("personality", PERSONALITIES)
def test_personality(guest, programs, personality):
    o = clean(guest.run(programs[f"pers_{personality}"]))
    ok(o, P_OPEN, P_MIRROR, P_MIGRATE, P_MADVISE, P_VERIFY, P_VERIFY + 1)
    ops = o.result.ops
    assert ops[P_MIRROR].ret == 32 and ops[P_MIGRATE].ret > 0, runner.describe(o)
    # File 1 is the process's only bound file: the counters are its own.
    c = o.result.counters
    assert c[protocol.BALANCED] == 1 and c[protocol.MN_STARTS] == c[protocol.MN_ENDS] > 0
    assert c[protocol.MN_REFUSED] == 0  # nothing here invalidates without blocking
    if personality == "slow":
        # Its start sleeps at least a millisecond in the madvise's invalidation.
        assert ops[P_MADVISE].duration_us >= 1000, runner.describe(o)
    # The device's counters over one more run: the CPU faults of the last
    # verify bring back one page each, or a window each with serial_to_ram
    # (16 pages) and serial_to_ram_2m (the 32 pages on the device at once).
    again = clean(guest.run(programs[f"pers_{personality}"]))
    delta = {d: again.result.counters[protocol.HW_COUNTERS + d] - c[protocol.HW_COUNTERS + d]
             for d in (protocol.Drv.CPU_FAULTS, protocol.Drv.TO_RAM)}
    faults, moved = delta[protocol.Drv.CPU_FAULTS], delta[protocol.Drv.TO_RAM]
    assert faults > 0, delta
    if personality == "serial_to_ram":
        assert moved >= 2 * faults, delta
    elif personality == "serial_to_ram_2m":
        assert moved > 16 * faults, delta
    else:
        assert moved <= faults, delta


def test_failed_copy_and_allocation_in_the_cpu_fault_path(guest, programs):
    before = clean(guest.run(programs["to_ram_fail"]))
    after = clean(guest.run(programs["to_ram_fail"]))
    for o in (before, after):
        ops = o.result.ops
        assert ops[2].ret > 0 and ops[4].err == errno.EFAULT, runner.describe(o)
        ok(o, 2, 3, 5, 6, 7, 8)

    def delta(d):
        return (after.result.counters[protocol.HW_COUNTERS + d]
                - before.result.counters[protocol.HW_COUNTERS + d])
    assert delta(protocol.Drv.COPY_ERRORS) == 1
    # What the migration moved came back, a fault a page, and three faults more.
    moved = after.result.ops[2].ret
    assert delta(protocol.Drv.TO_RAM) == moved
    assert delta(protocol.Drv.CPU_FAULTS) >= moved + 1 + 3


def test_two_files_on_one_mm(guest, programs):
    o = clean(guest.run(programs["two_files"]))
    ok(o, *range(2, 12))
    ops = o.result.ops
    # Two contexts, each of which maps the buffer.
    assert ops[2].ret != ops[3].ret, runner.describe(o)
    assert ops[4].ret == 32 and ops[5].ret == 32 and ops[7].ret == 32 and ops[8].ret == 32
    c = o.result.counters
    assert c[protocol.BALANCED] == 1 and c[protocol.MN_STARTS] > 0


def test_second_device(guest, programs):
    o = clean(guest.run(programs["two_devices"]))
    ok(o, *range(2, 8))
    ops = o.result.ops
    assert ops[3].ret > 0 and ops[4].ret == 16, runner.describe(o)
    assert ops[5].ret == 4


def test_fork_child_binds_its_own_file(guest, programs):
    o = clean(guest.run(programs["fork_file"]))
    ok(o, *range(2, 10))
    assert not o.result.ops[4].flags & protocol.OpFlag.CHILD_FAILED


@pytest.mark.parametrize("personality", PERSONALITIES)
def test_kill_and_mrelease_a_child_holding_device_memory(guest, programs, personality):
    for _ in range(2):
        o = guest.run(programs[f"reaper_{personality}"])
        assert o.result is not None and o.result.status == protocol.Status.OK, \
            runner.describe(o)
        # The reaper may start an invalidation on a refusing personality
        # while exit_mmap() takes the notifiers off the mm; its end then
        # never comes. The driver judges the balance at mm release, before.
        clean(o)
        ops = o.result.ops
        # The child held its mappings and device pages, and was asleep, when killed.
        ok(o, R_MIGRATE, R_KILL, R_DEV_READ, R_DEV_READ + 1)
        assert ops[R_MIGRATE].ret > 0, runner.describe(o)
        asleep = [i for i in R_SLEEPS if ops[i].flags & protocol.OpFlag.STARTED]
        assert asleep and not ops[asleep[-1]].flags & protocol.OpFlag.DONE, runner.describe(o)
        # Reaped; or a non-blocking notifier (the personality's, or an
        # interval one with its lock taken) asked the reaper to come back; or
        # the child's exit had released its memory already.
        assert ops[R_MRELEASE].err in (0, errno.EAGAIN, errno.ESRCH), runner.describe(o)


def test_oom_kill_of_a_child_holding_device_memory(guest, programs):
    o = clean(guest.run(programs["oom_kill"]))
    ops = o.result.ops
    fork = ops[2]
    # The child died of the OOM killer's SIGKILL inside its oom_kill op.
    assert fork.flags & protocol.OpFlag.CHILD_FAILED, runner.describe(o)
    assert fork.ret & 0x7f == signal.SIGKILL, runner.describe(o)
    ok(o, 7, 10, 11)
    assert ops[7].ret > 0
    assert ops[8].flags & protocol.OpFlag.STARTED and not ops[8].flags & protocol.OpFlag.DONE
    assert ops[9].flags == 0


def test_madvise_populate_and_collapse_device_memory(guest, programs):
    o = clean(guest.run(programs["madvise"]))
    ops = o.result.ops
    ok(o, 3, 4, 5, 6, 9, 10)
    assert ops[3].ret > 0 and ops[9].ret == 512, runner.describe(o)
    # A collapse may find no huge page or a page it cannot take: an answer, not a finding.
    assert ops[8].err in (0, errno.EAGAIN, errno.ENOMEM, errno.EINVAL), runner.describe(o)
    assert ops[10].ret == 0
