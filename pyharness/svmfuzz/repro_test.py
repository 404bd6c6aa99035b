"""svmfuzz prog2c and svmfuzz repro, with the build's runner module and a
stand-in runner; the guest side is repro_vm_test.py."""

import types
from pathlib import Path

import pytest

from svmfuzz import cli, native, protocol
from svmfuzz.artifacts import image
from svmfuzz.artifacts.cpio import NewcWriter
from svmfuzz.errors import SvmfuzzError
from svmfuzz.oracles.console import Finding
from svmfuzz.paths import REPO_ROOT, build_dir

SMOKE = REPO_ROOT / "corpus" / "programs" / "boot_smoke.svmp"
# mmap buf=0 pages=1, then a short record whose byte picks the stand-in's finding.
SAVED = bytes([0, 0, 0, 1, 0, 0, 0])
TITLE = "INFO: task hung in svmdev_fence_wait"


def prog2c(tmp_path, *argv) -> tuple[int, str]:
    out = tmp_path / "repro.c"
    rc = cli.main(["prog2c", "--build-dir", str(build_dir()), "-o", str(out), *argv])
    return rc, out.read_text() if rc == 0 else ""


def test_prog2c_writes_the_program_as_c_with_each_op_above_its_code(tmp_path):
    rc, source = prog2c(tmp_path, str(SMOKE))
    assert rc == 0
    assert "/* 0: mmap buf=0 pages=64 kind=anon prot=rw */" in source
    assert "/* 13: munmap buf=0 off=0 pages=64 */" in source
    assert "SVMDEV_IOC_MIRROR" in source and "int main(" in source
    rc, source = prog2c(tmp_path, "--knobs", "break_imbalance=1", "--repeat", "0", str(SMOKE))
    assert rc == 0
    assert "initial_knobs[] = {0, 0, 0, 0, 0, 0, 1, 0};" in source
    assert "#define DEFAULT_RUNS 0L" in source


def test_prog2c_says_why_it_cannot(tmp_path, capsys):
    rc, _ = prog2c(tmp_path, "--target", "test_hmm", str(SMOKE))
    assert rc == 1
    assert ("op 8 (dev_atomic buf=0 off=48 pages=4): test_hmm cannot express it"
            in capsys.readouterr().err)
    bad = tmp_path / "bad.svmp"
    bad.write_text("mmap buf=0 pages=4 kind=anon prot=rw\nmirror buf=0 off=9 pages=1 write=no\n")
    assert prog2c(tmp_path, str(bad))[0] == 1
    err = capsys.readouterr().err
    assert f"svmfuzz: prog2c: {bad}:2:" in err, err
    empty = tmp_path / "crash-empty"
    empty.write_bytes(b"")
    assert prog2c(tmp_path, str(empty))[0] == 1
    assert "it decodes to no op: nothing to reproduce" in capsys.readouterr().err
    assert prog2c(tmp_path, "--knobs", "break_everything=1", str(SMOKE))[0] == 1
    assert "--knobs: want name=number" in capsys.readouterr().err
    assert prog2c(tmp_path, str(tmp_path / "none.svmp"))[0] == 1
    assert "no such file" in capsys.readouterr().err


def _campaign(tmp_path: Path, conf: str) -> Path:
    (tmp_path / "campaign.conf").write_text(conf)
    (tmp_path / "crashes").mkdir()
    path = tmp_path / "crashes" / "crash-a"
    path.write_bytes(SAVED + bytes([1]))
    return path


def test_prog2c_of_a_saved_input_takes_its_campaigns_knobs_and_bound(tmp_path):
    saved = _campaign(tmp_path, "program_timeout_ms = 7000\nknobs = break_fence_wait=1\n")
    rc, source = prog2c(tmp_path, str(saved))
    assert rc == 0
    assert "initial_knobs[] = {0, 0, 0, 0, 0, 0, 0, 1};" in source
    assert "#define PROGRAM_TIMEOUT_MS 7000" in source
    assert "/* 0: mmap buf=0 pages=1 kind=anon prot=none */" in source


class _Runner:
    """The finding each program's last byte names, in turn for each run."""
    titles = {1: [TITLE, TITLE, ""], 2: [""]}
    seen: list = []

    def __init__(self, cfg, log):
        self.cfg = cfg
        self.runs = 0
        self.life = types.SimpleNamespace(console_log=Path("/vm/vm0-life000.console.log"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def run(self, program, knobs=None):
        _Runner.seen.append((self.cfg, knobs))
        turn = self.titles.get(program[-1], [""])
        title = turn[self.runs % len(turn)]
        self.runs += 1
        findings = [Finding(title=title, category="hang", frame="", report="")] if title else []
        result = protocol.ExecResult(id=1, status=protocol.Status.OK, detail=0, duration_us=1)
        return types.SimpleNamespace(findings=findings, result=result, life=self.life)


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr("svmfuzz.vm.config_from_args", lambda args, run, log: args.workdir)
    monkeypatch.setattr(native, "RunnerConfig", lambda vm, **kw: dict(kw, vm=vm), raising=False)
    monkeypatch.setattr("svmfuzz.runner.Runner", _Runner)
    _Runner.seen = []


def test_repro_runs_a_saved_input_as_its_campaign_did(tmp_path, stand_in, capsys):
    saved = _campaign(tmp_path, "op_timeout_ms = 3000\nknobs = break_fence_wait=1\n")
    assert cli.main(["repro", str(saved), "-n", "3", "--build-dir", str(build_dir())]) == 0
    out = capsys.readouterr().out
    assert f"repro: crash-a: reproduced 2/3: {TITLE}" in out
    assert "repro: console of a run that reproduced it: /vm/vm0-life000.console.log" in out
    assert [k for _, k in _Runner.seen] == [protocol.Knobs(break_fence_wait=1)] * 3
    cfg = _Runner.seen[0][0]
    assert cfg["op_timeout_ms"] == 3000 and cfg["vm"] == str(tmp_path / "repro-vm")
    # --knobs wins over the campaign's.
    _Runner.seen = []
    assert cli.main(["repro", str(saved), "-n", "1", "--knobs", "break_imbalance=1",
                     "--build-dir", str(build_dir())]) == 0
    assert [k for _, k in _Runner.seen] == [protocol.Knobs(break_imbalance=1)]


def test_repro_of_a_program_that_does_not_reproduce_fails(tmp_path, stand_in, capsys):
    prog = tmp_path / "p.svmp"
    prog.write_text("mmap buf=0 pages=1 kind=anon prot=rw\n")
    assert cli.main(["repro", str(prog), "-n", "2", "--build-dir", str(build_dir())]) == 1
    assert "repro: p.svmp: did not reproduce: no finding in 2 run(s)" in capsys.readouterr().out
    assert [k for _, k in _Runner.seen] == [None, None]
    empty = tmp_path / "crash-empty"
    empty.write_bytes(b"")
    assert cli.main(["repro", str(empty), "--build-dir", str(build_dir())]) == 1
    assert "it is empty: no program to run" in capsys.readouterr().err


def test_extend_appends_an_archive_of_static_binaries(tmp_path):
    base = tmp_path / "base.cpio"
    with open(base, "wb") as f:
        w = NewcWriter(f)
        w.directory("bin")
        w.finish()
    if not image.BUSYBOX.is_file():
        pytest.skip(f"no {image.BUSYBOX}")
    out = image.extend(base, {"tool": image.BUSYBOX}, tmp_path / "out.cpio")
    data = out.read_bytes()
    assert data.startswith(base.read_bytes())
    second = data[len(base.read_bytes()):]
    assert second.startswith(b"070701") and b"bin/tool\0" in second
    assert second.rstrip(b"\0").endswith(b"TRAILER!!!") and len(data) % 4 == 0
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(SvmfuzzError, match="not a statically linked binary"):
        image.extend(base, {"script": script}, tmp_path / "bad.cpio")
