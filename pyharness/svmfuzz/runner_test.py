import os
import subprocess
from pathlib import Path

import pytest

from svmfuzz import native, protocol, runner, vm
from svmfuzz.errors import SvmfuzzError
from svmfuzz.paths import build_dir
from svmfuzz.vm_test import make_artifacts

# The stand-in QEMU of vm_test.py reads a program's first byte as an order.
KERNEL_DIES = b"\xfe"
GUEST_HANGS = b"\xfd"
EXECUTOR_LEAVES = b"\xfc"
KERNEL_WARNS = b"\xfb"
DEVICE_ACCESS = b"\xfa"
TASK_STUCK = b"\xf9"
EXECUTOR_EXITS = b"\xf8"
UNKNOWN_STATUS = b"\xf6"
QEMU_FREEZES = b"\xf7"


@pytest.fixture
def cfg(tmp_path):
    artifacts = make_artifacts(tmp_path)
    return runner.RunnerConfig(vm.config(artifacts, tmp_path / "work"), boot_timeout=20,
                               program_timeout_ms=500, result_slack=1)


def test_runs_programs_in_one_life(cfg):
    with runner.Runner(cfg) as r:
        a = r.run(b"\x01\x02\x03")
        b = r.run(b"\x04")
        assert r.ping() < 5
    assert a.result.status == protocol.Status.OK and a.result.cover == [3]
    assert [o.code for o in a.result.ops] == [1, 2, 3]
    assert b.id == a.id + 1 and not b.lost and not b.findings
    assert len(r.lives) == 1 and r.lives[0].programs == 2 and r.lives[0].end == ""
    assert r.lives[0].console_log.name == "vm0-life000.console.log"


def test_device_requests_are_performed_and_stale_accesses_found(cfg):
    with runner.Runner(cfg) as r:
        o = r.run(DEVICE_ACCESS)
        clean = r.run(b"\x01")
    assert o.result.ops[0].ret == 0x1234  # what the device's ACCESS read
    assert [f.title for f in o.findings] == ["device stale access in ctx 3 at 0x100000000000"]
    assert clean.findings == [] and clean.life is o.life  # the kernel is still fit


def test_the_runners_control_channel_is_the_programs_devices(cfg):
    with runner.Runner(cfg) as r:
        r.boot()
        ctl = r.devctl(0)
        assert ctl.ping() == (0x10000, 0)
        assert r.run(b"\x01").result.status == protocol.Status.OK
    with pytest.raises(SvmfuzzError, match="no VM"):
        r.devctl(0)


def test_kernel_crash_ends_the_life_and_keeps_its_console(cfg):
    with runner.Runner(cfg) as r:
        crashed = r.run(KERNEL_DIES)
        after = r.run(b"\x01")
    assert crashed.result is None and "QEMU exited (0)" in crashed.lost
    # The report the dying kernel printed names the loss.
    assert crashed.title() == "KASAN: use-after-free in hmm_range_fault"
    assert after.result.status == protocol.Status.OK and after.life.index == 1
    first, second = r.lives
    assert first.console_log != second.console_log
    assert "Kernel panic" in first.console_log.read_text()
    assert "Kernel panic" not in second.console_log.read_text()
    assert "QEMU exited (0)" in first.end


def test_a_guest_that_powers_off_without_its_executor_lost_the_executor(cfg):
    with runner.Runner(cfg) as r:
        o = r.run(EXECUTOR_EXITS)
    assert o.result is None and "QEMU exited (0)" in o.lost
    assert o.title() == "executor lost" and native.EXECUTOR_EXITED in o.findings[0].report


def test_a_stuck_task_ends_the_life_without_losing_the_guest(cfg):
    with runner.Runner(cfg) as r:
        stuck = r.run(TASK_STUCK)
        ok = r.run(b"\x01")
    assert stuck.result.status == protocol.Status.STUCK and not stuck.lost
    # The runner ended the life; the unkillable-task finding names why.
    assert stuck.title() == "INFO: task hung"
    assert stuck.life.end == "kernel: INFO: task hung"
    assert ok.life.index == 1 and r.lives[0] is stuck.life


def test_hung_guest_is_killed_and_replaced(cfg):
    with runner.Runner(cfg) as r:
        hung = r.run(GUEST_HANGS)
        assert r.lives[0].end.startswith("no result within")
        ok = r.run(b"\x02")
    assert hung.result is None and hung.lost.startswith("no result within")
    assert hung.title() == "no output from test machine"
    assert ok.result.status == protocol.Status.OK and ok.life.index == 1


# A frozen QEMU is not blamed on the executor: its monitor tells them apart.
@pytest.mark.parametrize("program, lost, title", [
    (EXECUTOR_LEAVES, "closed the executor port", "executor lost"),
    (QEMU_FREEZES, "QEMU's monitor did not answer", "QEMU not responding"),
])
def test_lost_executor_or_frozen_qemu_is_replaced(cfg, program, lost, title):
    with runner.Runner(cfg) as r:
        o = r.run(program)
        ok = r.run(b"\x02")
    assert o.result is None and lost in o.lost
    assert o.title() == title and o.findings[0].category == "lost"
    assert ok.life.index == 1


def test_kernel_warning_is_reported_and_the_next_program_gets_a_fresh_kernel(cfg):
    with runner.Runner(cfg) as r:
        warned = r.run(KERNEL_WARNS)
        clean = r.run(b"\x01")
    assert warned.result.status == protocol.Status.OK
    assert warned.title() == "WARNING in hmm_bar"
    assert r.lives[0].end == "kernel: WARNING in hmm_bar"
    assert clean.life.index == 1 and clean.findings == []


def test_boot_failure_is_an_error_with_the_life_recorded(cfg, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_MODE", "die")
    with runner.Runner(cfg) as r:
        with pytest.raises(SvmfuzzError, match="could not load kernel"):
            r.run(b"\x01")
    assert r.lives[0].end.startswith("boot failed")


def test_describe_names_ops_flags_and_mismatches(cfg):
    F = protocol.OpFlag
    result = protocol.ExecResult(
        5, protocol.Status.HUNG, 1,
        ops=[protocol.OpResult(0, 0, F.STARTED | F.DONE, 0, 0, 3),
             protocol.OpResult(1, 2, F.STARTED | F.TIMED_OUT, 0, 0, 0),
             protocol.OpResult(1, 0, F(0), 0, 0, 0)],
        mismatches=[protocol.Mismatch(protocol.END_OF_PROCESS, 1, 7, 2, 0, 0xff)])
    life = native.Life(0, Path("console.log"))
    lines = runner.describe(runner.Outcome(5, result, life))
    assert lines[0].startswith("program 5: hung: op 1 passed its deadline")
    assert "@2 munmap" in lines[2] and lines[2].endswith("timed_out")
    assert len([line for line in lines if "munmap" in line]) == 1  # op 2 never started
    assert "MISMATCH after end of process: buf=1 page=2 byte=7" in lines[3]


def built_tool(env: str, rel: str) -> Path | None:
    path = Path(os.environ[env]) if env in os.environ else build_dir() / rel
    return path if path.is_file() else None


def test_real_executor_behind_the_runner(cfg, monkeypatch):
    """The C++ executor (run on this machine, not in a guest) and the Python
    host agree on every byte: real programs, real results."""
    exe = built_tool("SVMFUZZ_EXECUTOR", "fuzz/executor/svmfuzz-executor")
    if exe is None:
        pytest.skip("no svmfuzz-executor built (set SVMFUZZ_EXECUTOR)")
    sources = Path(__file__).resolve().parents[2] / "fuzz" / "executor"
    if exe.stat().st_mtime < max(f.stat().st_mtime for f in sources.iterdir()):
        pytest.skip(f"{exe} is older than its sources: rebuild it")
    monkeypatch.setenv("FAKE_QEMU_MODE", "exec")
    monkeypatch.setenv("FAKE_QEMU_EXECUTOR", str(exe))
    mmap = bytes([0, 0, 0, 4, 0, 0, 3])                 # mmap buf=0 pages=4 kind=anon prot=rw
    write = bytes([10, 0, 0, 0, 0, 4, 0, 7, 0, 0, 0])   # write buf=0 off=0 pages=4 seed=7
    verify = bytes([11, 0, 0, 0, 0, 4, 0, 7, 0, 0, 0])  # verify ... seed=7
    mirror = bytes([12, 0, 0, 0, 0, 1, 0, 1])           # mirror buf=0 off=0 pages=1 write=yes
    sleep = bytes([33, 0, 0x40, 0x42, 0x0f, 0])         # sleep us=1000000
    delay = bytes([24, 0, 0xE8, 0x03, 0, 0])            # delay_acks us=1000
    with runner.Runner(cfg) as r:
        ok = r.run(mmap + write + verify + mirror + delay)
        hung = r.run(sleep)
        again = r.run(mmap + write + verify)
    assert ok.result.status == protocol.Status.OK
    assert [o.code for o in ok.result.ops] == [0, 10, 11, 12, 24]
    assert all(o.err == 0 for o in ok.result.ops[:3]) and not ok.result.mismatches
    assert ok.result.ops[3].flags & protocol.OpFlag.UNSUPPORTED
    # A device action goes to the host, which performs it on the device's channel.
    assert ok.result.ops[4].err == 0 and not ok.result.ops[4].flags & protocol.OpFlag.UNSUPPORTED
    assert hung.result.status == protocol.Status.HUNG and hung.result.detail == -1
    assert again.result.status == protocol.Status.OK and again.life.index == 0


def test_text_programs_are_encoded_naming_the_file_and_line_of_a_bad_one(tmp_path):
    prog = tmp_path / "p.svmp"
    prog.write_text("mmap buf=0 pages=4 kind=anon prot=rw\nyield\n")
    assert runner.encode_programs([prog]) == [bytes([0, 0, 0, 4, 0, 0, 3, 34, 0])]
    assert runner.encode_texts({"p": """
        mmap buf=0 pages=4 kind=anon prot=rw
        yield
    """}) == {"p": bytes([0, 0, 0, 4, 0, 0, 3, 34, 0])}
    bad = tmp_path / "bad.svmp"
    bad.write_text("yield\nmmap buf=0\n")
    with pytest.raises(SvmfuzzError, match=r"bad\.svmp:2:\d+: expected argument 'pages'"):
        runner.encode_programs([prog, bad])
    with pytest.raises(SvmfuzzError, match=r"^q:1:"):
        runner.encode_texts({"p": "yield", "q": "munmap buf=0 off=0 pages=1"})
    with pytest.raises(SvmfuzzError, match="none.svmp: cannot read it: No such file"):
        runner.encode_programs([tmp_path / "none.svmp"])


def test_op_names_are_the_ops_svmprog_lists():
    svmprog = built_tool("SVMFUZZ_SVMPROG", "fuzz/program/svmprog")
    if svmprog is None:
        pytest.skip("no svmprog built (set SVMFUZZ_SVMPROG)")
    # protocol.OP_NAMES mirrors the program model's op table.
    listed = subprocess.run([str(svmprog), "ops"], capture_output=True, text=True, check=True)
    names = [line.split()[0] for line in listed.stdout.splitlines()
             if line and not line[0].isspace()]
    assert tuple(names) == protocol.OP_NAMES


def test_a_result_no_one_can_read_is_a_finding_and_ends_the_life(cfg):
    with runner.Runner(cfg) as r:
        odd = r.run(UNKNOWN_STATUS)
        after = r.run(b"\x01")
    assert odd.result is None and odd.title() == runner.UNREADABLE_RESULT
    assert "99 is not a valid Status" in odd.findings[0].report
    assert odd.lost.startswith(runner.UNREADABLE_RESULT)
    assert after.result.status == protocol.Status.OK and after.life.index == 1
    assert r.lives[0].end.startswith(runner.UNREADABLE_RESULT)


def test_the_guest_init_prints_the_marker_the_runner_looks_for():
    init = (Path(__file__).resolve().parents[2] / "guest-driver" / "initramfs" / "init").read_text()
    assert native.EXECUTOR_EXITED in init
    assert native.EXECUTOR_PORT_NAME == "svmfuzz.exec"
