"""Device actions in the real guest: a program's dev_access, fault_storm and
delay_acks performed by the device through its host control channel, and
the stale-access oracle, which fires when the device acknowledges
invalidations before it performs them (its EARLY_ACK mode: the driver is
correct, the device is not) and stays silent when it does not.
"""

import pytest

from svmfuzz import devctl, protocol, runner, vm
from svmfuzz.paths import build_dir

pytestmark = pytest.mark.vm

PROGRAMS = {
    # A word of a mirrored page, and one of a page the device has not
    # mapped (the access stalls until the driver serves its fault).
    "access": """
        mmap buf=0 pages=2 kind=anon prot=rw
        write buf=0 off=0 pages=2 seed=5
        mirror buf=0 off=0 pages=2 write=no
        dev_access buf=0 page=1 word=3 access=read
        mmap buf=1 pages=1 kind=anon prot=rw
        write buf=1 off=0 pages=1 seed=6
        dev_access buf=1 page=0 word=0 access=read
    """,
    # Faults by the dozen, then the device holds invalidation acks for 100 ms
    # (the madvise waits on them); the data must come through intact.
    "storm": """
        mmap buf=0 pages=8 kind=anon prot=rw
        write buf=0 off=0 pages=8 seed=1
        fault_storm buf=0 off=0 pages=8 count=32
        mirror buf=0 off=0 pages=8 write=no
        delay_acks us=100000
        madvise buf=0 off=0 pages=4 advice=dontneed
        verify buf=0 off=4 pages=4 seed=1
        dev_read buf=0 off=0 pages=8
    """,
    # The device reads a word (its TLB keeps the translation), the page is
    # dropped (the driver invalidates it), and the device reads it again.
    "stale": """
        mmap buf=0 pages=1 kind=anon prot=rw
        write buf=0 off=0 pages=1 seed=1
        mirror buf=0 off=0 pages=1 write=no
        dev_access buf=0 page=0 word=0 access=read
        madvise buf=0 off=0 pages=1 advice=dontneed
        dev_access buf=0 page=0 word=0 access=read
    """,
}
# Far below where the kernel places mappings (Supervisor's kBufferBase);
# buffer i at BASE + i * 16 MiB.
BUFFER_BASE = 0x100000000000


def pattern_word(seed: int, word: int) -> int:
    """PatternWord of fuzz/executor/buffers.cc: the 8 bytes of pattern(seed) at word `word`."""
    m = (1 << 64) - 1
    x = (((seed << 32) ^ word) + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


@pytest.fixture(scope="module")
def programs() -> dict[str, bytes]:
    return runner.encode_texts(PROGRAMS)


@pytest.fixture(scope="module")
def guest(guest_artifacts):
    cfg = runner.RunnerConfig(vm.config(guest_artifacts, build_dir() / "vm" / "device_vm_test",
                                        accel="tcg"))
    with runner.Runner(cfg, print) as r:
        r.boot()
        yield r


def clean(outcome: runner.Outcome) -> runner.Outcome:
    assert outcome.result is not None, outcome.lost
    assert outcome.findings == [] and outcome.result.status == protocol.Status.OK, \
        runner.describe(outcome)
    return outcome


def test_dev_access_reads_what_the_program_wrote(guest, programs):
    r = clean(guest.run(programs["access"])).result
    mapped, faulted = r.ops[3], r.ops[6]
    assert (mapped.err, faulted.err) == (0, 0), runner.describe(guest.run(programs["access"]))
    assert mapped.ret & ((1 << 64) - 1) == pattern_word(5, 512 + 3)
    assert faulted.ret & ((1 << 64) - 1) == pattern_word(6, 0)


def test_fault_storm_and_delayed_acks_on_a_correct_driver(guest, programs):
    o = clean(guest.run(programs["storm"]))
    ops = o.result.ops
    assert all(op.err == 0 and op.flags & protocol.OpFlag.DONE for op in ops), runner.describe(o)
    assert not o.result.mismatches
    # The device let the madvise's invalidation wait for the release.
    assert ops[2].ret > 0  # accesses that stalled
    assert ops[5].duration_us >= 50000, runner.describe(o)


def test_stale_access_found_with_early_acks_and_not_without(guest, programs):
    ctl = guest.devctl(0)
    clean(guest.run(programs["stale"]))
    ctl.inval_mode(devctl.InvalMode.EARLY_ACK, 64)
    try:
        o = guest.run(programs["stale"])
    finally:
        ctl.inval_mode(devctl.InvalMode.NORMAL, 0)
        ctl.release()
    assert [f.category for f in o.findings] == ["stale"], runner.describe(o)
    assert o.findings[0].title.startswith("device stale access in ctx ")
    assert o.findings[0].title.endswith(f"at {BUFFER_BASE:#x}")
    # The kernel is fine: the life goes on, and the same program is clean again.
    assert guest.life is o.life and not o.life.end
    clean(guest.run(programs["stale"]))
