"""Each oracle fires in the real guest on a real trigger, with the title a
kernel developer would expect, and stays silent on the same program without
it. The triggers are the driver's test-only knobs (ExecRequest.knobs) and the
host taking the executor or the VM away.

The cases share VM lives: the driver's oracles leave the kernel fit for the
next program, so they run in one life; a kernel report, a lost executor and a
lost VM each end theirs, and go last in that order.
"""

import contextlib
import errno
import os
import signal
import threading
from pathlib import Path

import pytest

from svmfuzz import native, protocol, runner, vm
from svmfuzz.paths import build_dir

pytestmark = pytest.mark.vm

PROGRAMS = {
    # The mirror loop of the driver: fault in, map, commit.
    "mirror": """
        mmap buf=0 pages=4 kind=anon prot=rw
        write buf=0 off=0 pages=4 seed=1
        mirror buf=0 off=0 pages=4 write=no
    """,
    # A mirrored range unmapped: a notifier start and end on the mm.
    "unmap": """
        mmap buf=0 pages=4 kind=anon prot=rw
        write buf=0 off=0 pages=4 seed=1
        mirror buf=0 off=0 pages=4 write=no
        munmap buf=0 off=0 pages=4
    """,
    # Copy-on-write in the parent while a child keeps the old pages: the
    # device must read what the parent wrote, not the pages it mapped before.
    "cow": """
        mmap buf=0 pages=4 kind=anon prot=rw
        write buf=0 off=0 pages=4 seed=1
        mirror buf=0 off=0 pages=4 write=no
        fork wait=no {
          sleep us=1000000
        }
        write buf=0 off=0 pages=4 seed=2
        dev_read buf=0 off=0 pages=4
    """,
    # A device read of a page it has not mapped: one device fault.
    "fault": """
        mmap buf=0 pages=1 kind=anon prot=rw
        write buf=0 off=0 pages=1 seed=1
        dev_read buf=0 off=0 pages=1
    """,
    # The device drops the acknowledgement of the unmap's invalidation: the
    # driver restarts the rings after fence_timeout_ms, and the next device
    # ioctl of the file says the device lost work (-EIO). With the
    # break_fence_wait knob the fence waits for ever, where SIGKILL cannot
    # end it.
    "lost_ack": """
        mmap buf=0 pages=4 kind=anon prot=rw
        mmap buf=1 pages=4 kind=anon prot=rw
        write buf=0 off=0 pages=4 seed=1
        write buf=1 off=0 pages=4 seed=2
        mirror buf=0 off=0 pages=4 write=no
        drop_acks count=1
        munmap buf=0 off=0 pages=4
        dev_read buf=1 off=0 pages=4
        dev_read buf=1 off=0 pages=4
    """,
    # A ring restart (the device fails the DMA of the unmap's completion,
    # halts, and the driver restarts it) while the device maps pages that are
    # then freed and mapped again at the same address: the device must read
    # the new pages, never the freed ones.
    "restart_remap": """
        mmap buf=0 pages=4 kind=anon prot=rw
        write buf=0 off=0 pages=4 seed=1
        dev_read buf=0 off=0 pages=4
        fail_dma count=1
        munmap buf=0 off=0 pages=4
        mmap buf=0 pages=4 kind=anon prot=rw
        write buf=0 off=0 pages=4 seed=2
        dev_read buf=0 off=0 pages=4
        dev_read buf=0 off=0 pages=4
    """,
    "sleep": """
        sleep us=1000000
        sleep us=1000000
        sleep us=1000000
    """,
}
# The kernel's hung-task detector, quick enough to see a worker the
# fault_delay_ms knob keeps asleep for 10 s.
APPEND = ["sysctl.kernel.hung_task_timeout_secs=3"]
# The per-op bound: past the 10 s fault delay, so the program waits for the
# hung-task report. The livelock case uses a short one.
OP_TIMEOUT_MS = 15000
# Where x86-64 loads modules (the guest kernel is not randomized).
MODULE_TEXT = 0xffffffffa0000000
LIVELOCK_OP_TIMEOUT_MS = 3000


@pytest.fixture(scope="module")
def programs() -> dict[str, bytes]:
    return runner.encode_texts(PROGRAMS)


@pytest.fixture(scope="module")
def guest(guest_artifacts):
    cfg = runner.RunnerConfig(
        vm.config(guest_artifacts, build_dir() / "vm" / "oracle_vm_test", accel="tcg",
                  extra_append=APPEND),
        op_timeout_ms=OP_TIMEOUT_MS)
    with runner.Runner(cfg, print) as r:
        yield r


@contextlib.contextmanager
def op_timeout(r: runner.Runner, ms: int):
    saved, r.cfg.op_timeout_ms = r.cfg.op_timeout_ms, ms
    try:
        yield
    finally:
        r.cfg.op_timeout_ms = saved


def clean(outcome: runner.Outcome) -> runner.Outcome:
    assert outcome.result is not None, outcome.lost
    assert outcome.findings == [] and outcome.result.status == protocol.Status.OK, \
        runner.describe(outcome)
    return outcome


def titles(outcome: runner.Outcome) -> list[str]:
    return [f.title for f in outcome.findings]


def test_livelock(guest, programs):
    with op_timeout(guest, LIVELOCK_OP_TIMEOUT_MS):
        clean(guest.run(programs["mirror"]))
        o = guest.run(programs["mirror"], protocol.Knobs(break_livelock=1))
    assert titles(o) == ["livelock in svmdev_range_fault"], runner.describe(o)
    # The watchdog's own evidence: the mirror op stopped, retries rising,
    # decided by the early verdict (no op completing), not the op bound.
    assert o.result.status == protocol.Status.HUNG and o.result.detail == 2
    assert o.result.watchdog_deltas[protocol.Drv.READ_RETRY] > 0
    assert "no op completed for" in o.result.message, o.result.message


def test_unbalanced_notifier(guest, programs):
    clean(guest.run(programs["unmap"]))
    o = guest.run(programs["unmap"], protocol.Knobs(break_imbalance=1))
    assert titles(o) == ["unbalanced mmu_notifier start/end in check"], runner.describe(o)
    c = o.result.counters
    assert c[protocol.BALANCED] == 0 and c[protocol.MN_STARTS] == c[protocol.MN_ENDS] + 1


def test_data_corruption(guest, programs):
    clean(guest.run(programs["cow"]))
    o = guest.run(programs["cow"], protocol.Knobs(break_skip_invalidate=1000))
    assert titles(o) == ["data corruption in dev_read"], runner.describe(o)
    assert {m.op for m in o.result.mismatches} == {6}


def test_console(guest, programs):
    o = clean(guest.run(programs["fault"]))
    # The driver's worker serves the device fault: its coverage comes back
    # as the program's remote coverage, the module's own code among it.
    assert o.result.cover and any(pc >= MODULE_TEXT for pc in o.result.remote_cover), \
        f"{len(o.result.cover)} PCs, remote {len(o.result.remote_cover)}"
    life = guest.life
    o = guest.run(programs["fault"], protocol.Knobs(fault_delay_ms=10000))
    assert o.findings and o.findings[0].category == "hang", runner.describe(o)
    assert o.title().startswith("INFO: task hung in"), o.title()
    assert "svmdev_fault_work" in o.findings[0].report
    # A kernel report ends the life: the next program gets a fresh kernel.
    assert life.end == f"kernel: {o.title()}"


def drv(outcome: runner.Outcome, counter: protocol.Drv) -> int:
    return outcome.result.counters[protocol.HW_COUNTERS + counter]


def test_lost_ack_is_survived(guest, programs):
    before = clean(guest.run(programs["unmap"]))
    o = clean(guest.run(programs["lost_ack"]))
    # The fence timed out and the rings restarted; munmap() returned.
    assert drv(o, protocol.Drv.FENCE_TIMEOUTS) > drv(before, protocol.Drv.FENCE_TIMEOUTS)
    assert drv(o, protocol.Drv.RING_RESTARTS) > drv(before, protocol.Drv.RING_RESTARTS)
    ops = o.result.ops
    assert ops[6].err == 0 and ops[6].flags & protocol.OpFlag.DONE
    # The next device ioctl says the device lost work; the one after works.
    assert ops[7].err == errno.EIO, ops[7]
    assert ops[8].err == 0 and ops[8].ret > 0, ops[8]


def test_ring_restart_leaves_no_stale_translation(guest, programs):
    before = clean(guest.run(programs["unmap"]))
    for _ in range(3):
        o = clean(guest.run(programs["restart_remap"]))
        assert not o.result.mismatches
        assert o.result.ops[7].err in (0, errno.EIO) and o.result.ops[8].err == 0
    assert drv(o, protocol.Drv.RING_RESTARTS) > drv(before, protocol.Drv.RING_RESTARTS)


def test_unkillable_task(guest, programs):
    clean(guest.run(programs["unmap"]))
    life = guest.life
    with op_timeout(guest, LIVELOCK_OP_TIMEOUT_MS):
        o = guest.run(programs["lost_ack"], protocol.Knobs(break_fence_wait=1))
    assert o.result is not None and o.result.status == protocol.Status.STUCK, runner.describe(o)
    # Asleep in the fence wait, or between two of its polls.
    assert chr(o.result.detail) in "DR", chr(o.result.detail)
    # Named after where it sleeps, as the hung-task detector would name it.
    f = o.findings[0]
    assert f.category == "hang" and f.title.startswith("INFO: task hung in svmdev_"), f.title
    assert "svmdev_wait_ms" in [fr.function for fr in f.frames], f.report
    assert {g.title for g in o.findings if g.category == "hang"} == {f.title}
    # The task holds the device's fence: the next program gets a fresh guest.
    assert life.end == f"kernel: {f.title}"


def lose_during(r: runner.Runner, program: bytes, how) -> runner.Outcome:
    """Runs `program` and does `how(qemu_pid, qmp_socket)` a second into it."""
    timer = threading.Timer(1.0, how, [r.vm_pid, r.qmp_socket])
    timer.start()
    try:
        return r.run(program)
    finally:
        timer.cancel()


def test_executor_lost(guest, programs):
    clean(guest.run(programs["sleep"]))
    # SysRq-i kills every task but init: the executor goes, the kernel stays.
    o = lose_during(guest, programs["sleep"], lambda pid, qmp: vm.qmp(
        qmp, "send-key", keys=[{"type": "qcode", "data": k} for k in ("alt", "sysrq", "i")]))
    assert o.result is None and titles(o) == ["executor lost"], runner.describe(o)
    assert o.findings[0].category == "lost" and native.EXECUTOR_EXITED in o.findings[0].report


def test_vm_lost(guest, programs):
    clean(guest.run(programs["sleep"]))
    o = lose_during(guest, programs["sleep"], lambda pid, qmp: os.kill(pid, signal.SIGKILL))
    assert o.result is None and titles(o) == ["lost connection to test machine"], \
        runner.describe(o)
    assert "QEMU exited (-9)" in o.lost
    assert Path(o.life.console_log).is_file()
