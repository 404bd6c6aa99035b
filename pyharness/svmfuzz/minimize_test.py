"""The minimizer's steps, against a stand-in for the guest."""

from svmfuzz import minimize

PROGRAM = """
# a comment
mmap buf=0 pages=16 kind=anon prot=rw
write buf=0 off=0 pages=16 seed=1
thread_create tid=1
@1 touch buf=0 off=0 pages=8
fork wait=yes {
  sleep us=2000
  mirror buf=0 off=0 pages=16 write=no
}
drop_acks count=3
thread_join tid=1
munmap buf=0 off=0 pages=16
"""


def _valid(text: str) -> bool:
    """Buffers must be mapped before use; a thread op needs its thread."""
    lines = minimize.ops(text)
    if not lines or not lines[0].startswith("mmap"):
        return False
    return not any(line.startswith("@1") for line in lines) or "thread_create tid=1" in lines


def test_drops_unwraps_and_shrinks_to_what_the_bug_needs():
    seen = []

    def holds(text: str) -> bool:
        seen.append(text)
        return "mirror buf=0" in text and "drop_acks" in text and "munmap" in text

    out = minimize.minimize(PROGRAM, holds, _valid)
    assert minimize.ops(out) == [
        "mmap buf=0 pages=1 kind=anon prot=rw",
        "mirror buf=0 off=0 pages=1 write=no",
        "drop_acks count=1",
        "munmap buf=0 off=0 pages=1",
    ]
    # No program ran twice, and none that the stand-in validator refuses.
    assert len(seen) == len(set(seen)) and all(_valid(t) for t in seen)


def test_a_step_that_loses_the_bug_is_not_kept():
    out = minimize.minimize(PROGRAM, lambda text: text.count("\n") >= 9, _valid)
    assert len(minimize.ops(out)) == 9


def test_the_step_budget_bounds_the_runs():
    runs = []
    minimize.minimize(PROGRAM, lambda text: runs.append(text) or False, _valid, max_steps=5)
    assert len(runs) == 5


def test_thread_ops_move_to_the_main_thread():
    out = minimize.minimize(PROGRAM, lambda text: "touch buf=0 off=0" in text, _valid)
    assert minimize.ops(out) == ["mmap buf=0 pages=1 kind=anon prot=rw",
                                 "touch buf=0 off=0 pages=1"]


def test_halves_first_keep_a_long_program_to_few_runs():
    text = "mmap buf=0 pages=1 kind=anon prot=rw\n" + "yield\n" * 40 + "drop_acks count=1\n" + \
        "yield\n" * 40
    runs = []

    def holds(t: str) -> bool:
        runs.append(t)
        return "drop_acks" in t

    out = minimize.minimize(text, holds, _valid)
    assert minimize.ops(out) == ["mmap buf=0 pages=1 kind=anon prot=rw", "drop_acks count=1"]
    # One op at a time would take over 80 runs.
    assert len(runs) < 40, len(runs)
