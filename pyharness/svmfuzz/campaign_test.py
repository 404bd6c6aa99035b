"""The campaign front end: the engines' progress, seeding and resuming,
campaigns of the real libFuzzer harness against the stand-in QEMU, and triage
with a stand-in runner."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest

from svmfuzz import campaign, cli, minimize, native, protocol, runner
from svmfuzz.errors import SvmfuzzError
from svmfuzz.oracles.console import Finding
from svmfuzz.paths import build_dir


def test_libfuzzer_status_lines():
    assert campaign.parse_libfuzzer(
        "#1234\tNEW    ft: 14681 corp: 17/2113b lim: 4096 exec/s: 3 rss: 28Mb L: 184/184 MS: 1 "
        "CrossOver-") == {"execs": 1234, "event": "NEW", "corpus": 17, "execs_per_sec": 3}
    assert campaign.parse_libfuzzer("#8\tINITED ft: 9 corp: 8/952b exec/s: 0 rss: 27Mb") == {
        "execs": 8, "event": "INITED", "corpus": 8, "execs_per_sec": 0}
    assert campaign.parse_libfuzzer("#64\tpulse  ft: 9 corp: 8/952b lim: 4096 rss: 27Mb") is None
    assert campaign.parse_libfuzzer("#64\tREDUCE ft: 9 corp: 8/952b lim: 4096 rss: 27Mb")[
        "execs_per_sec"] is None
    assert campaign.parse_libfuzzer("runner: life 0 ready in 59.4 s") is None
    assert campaign.parse_libfuzzer("INFO: 65536 Extra Counters") is None


def test_progress_line_from_stats_and_the_engines(tmp_path):
    (tmp_path / "stats.json").write_text(json.dumps(
        {"execs": 420, "execs_per_sec": 3.25, "guest_pcs": 15234, "findings": 3, "saved": 2,
         "lives": 4}))
    status = campaign.parse_libfuzzer("#400\tNEW    ft: 1 corp: 57/3kb exec/s: 3 rss: 28Mb")
    p = campaign.progress(tmp_path, "libfuzzer", 130, status)
    assert p.line() == ("fuzz: 2m10s execs 420 (3.2/s) guest PCs 15234 corpus 57 "
                        "findings 3 (saved 2) lives 4")
    afl = tmp_path / "afl" / "default"
    afl.mkdir(parents=True)
    (afl / "fuzzer_stats").write_text("start_time        : 1\ncorpus_count      : 31\n"
                                      "execs_done        : 99\n")
    assert campaign.progress(tmp_path, "afl", 5, None).corpus == 31
    # Before the engine says anything, the corpus directory does.
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a").write_bytes(b"x")
    (tmp_path / "corpus" / ".partial").write_bytes(b"x")
    empty = campaign.progress(tmp_path / "corpus", "libfuzzer", 0, None)
    assert (empty.execs, empty.corpus) == (0, 0)
    assert campaign.progress(tmp_path, "libfuzzer", 0, None).corpus == 1


def test_afl_stats_lines():
    assert campaign.parse_afl_stats("a   : 1\nbanner : x:y\nnothing\n") == {"a": "1", "banner": "x:y"}


def test_a_new_campaign_is_seeded_and_a_resumed_one_keeps_its_corpus(tmp_path):
    said = []
    n = campaign.seed(tmp_path, campaign.SEEDS, said.append)
    seeds = sorted(campaign.SEEDS.glob("*.svmp"))
    assert n == len(seeds) > 0
    assert [p.name for p in campaign.corpus_files(tmp_path / "corpus")] == sorted(
        f"{p.stem}.bin" for p in seeds)
    (tmp_path / "corpus" / "found-later").write_bytes(b"\x01\x02")
    (tmp_path / "corpus" / "boot_smoke.bin").write_bytes(b"\x03")
    assert campaign.seed(tmp_path, campaign.SEEDS, said.append) == n + 1
    assert (tmp_path / "corpus" / "boot_smoke.bin").read_bytes() == b"\x03"
    assert said[-1] == f"fuzz: resuming {tmp_path} ({n + 1} corpus inputs)"
    with pytest.raises(Exception, match="no seed programs"):
        campaign.seed(tmp_path / "other", tmp_path / "none", said.append)


def test_config_the_harness_reads(tmp_path):
    vm_cfg = types.SimpleNamespace(qemu=Path("/q/qemu"), kernel=Path("/k"),
                                   initramfs=Path("/i.cpio"), accel="tcg", cpus=2, memory="2G",
                                   devices=2, vram="8M", extra_append=["a=1", "b"])
    path = tmp_path / "campaign.conf"
    campaign.write_config(path, vm_cfg, tmp_path, "afl", 300, 5000, 20000)
    conf = campaign.read_config(path)
    assert conf["qemu"] == "/q/qemu"
    assert conf["vm_workdir"] == str(tmp_path / "vm")
    assert conf["append"] == "a=1 b"
    assert (conf["devices"], conf["op_timeout_ms"], conf["engine"]) == ("2", "5000", "afl")
    assert (conf["vram"], conf["reset"]) == ("8M", "snapshot")
    assert [p.name for p in tmp_path.iterdir()] == ["campaign.conf"]


def test_engine_command_lines(tmp_path):
    argv, env = campaign.engine_command("libfuzzer", Path("/b/h"), tmp_path, 120, 400)
    assert argv[0] == "/b/h" and argv[-1] == str(tmp_path / "corpus")
    assert {"-max_total_time=120", "-timeout=400", "-len_control=0"} <= set(argv)
    assert env["SVMFUZZ_CAMPAIGN"] == str(tmp_path / "campaign.conf")
    assert "AFL_CUSTOM_MUTATOR_LIBRARY" not in env
    assert env["SVMFUZZ_MUTATOR"] == "structured"
    _, env = campaign.engine_command("libfuzzer", Path("/b/h"), tmp_path, 120, 400,
                                     mutation="bytes")
    assert env["SVMFUZZ_MUTATOR"] == "bytes"
    if shutil.which("afl-fuzz"):
        argv, env = campaign.engine_command("afl", Path("/b/h"), tmp_path, 120, 400,
                                            Path("/b/libm.so"))
        assert argv[-2:] == ["--", "/b/h"]
        assert argv[argv.index("-t") + 1] == "400000"
        assert argv[argv.index("-V") + 1] == "120"
        assert env["AFL_MAP_SIZE"] == str(1 << 18)
        assert env["AFL_CUSTOM_MUTATOR_LIBRARY"] == "/b/libm.so"
        assert "AFL_CUSTOM_MUTATOR_ONLY" not in env
        assert env["SVMFUZZ_MUTATOR"] == "structured"
        argv, env = campaign.engine_command("afl", Path("/b/h"), tmp_path, 120, 400,
                                            Path("/b/libm.so"), "bytes")
        assert "AFL_CUSTOM_MUTATOR_LIBRARY" not in env


def test_the_afl_mutator_is_found_in_the_build(tmp_path):
    with pytest.raises(SvmfuzzError, match="svmfuzz-afl-mutator"):
        campaign.afl_mutator(tmp_path)
    lib = tmp_path / "fuzz" / "campaign" / campaign.AFL_MUTATOR
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"")
    assert campaign.afl_mutator(tmp_path) == lib


def _fake_vm(tmp_path):
    fake = build_dir() / "fuzz" / "runner" / "svmfuzz-fake-qemu"
    harness = build_dir() / "fuzz" / "campaign" / campaign.HARNESS["libfuzzer"]
    if not fake.is_file() or not harness.is_file():
        pytest.skip("the stand-in QEMU or the libFuzzer harness is not built")
    return lambda args, run, log: native.VmConfig(fake, tmp_path / "kernel",
                                                  tmp_path / "initramfs.cpio",
                                                  Path(args.workdir))


def test_a_campaign_against_the_stand_in_and_its_resumption(tmp_path, monkeypatch,
                                                            capsys):
    monkeypatch.setattr("svmfuzz.vm.config_from_args", _fake_vm(tmp_path))
    work = tmp_path / "campaign"
    argv = ["fuzz", "--build-dir", str(build_dir()), "--workdir", str(work), "--minutes", "0.1",
            "--progress-seconds", "1", "--program-timeout-ms", "500"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    stats = json.loads((work / "stats.json").read_text())
    seeds = len(list(campaign.SEEDS.glob("*.svmp")))
    assert stats["execs"] > seeds
    assert stats["engine"] == "libfuzzer"
    # The stand-in's coverage is the program's length: new lengths are new inputs.
    assert len(campaign.corpus_files(work / "corpus")) > seeds
    assert "fuzz: 0m01s execs" in out
    assert re.search(r"^fuzz: done after \d+\.\d min: \d+ execs", out, re.M)
    assert list((work / "vm").glob("vm0-life*.console.log"))
    # The harness's oracles decoded every result with the runner module.
    assert not list((work / "crashes").glob("crash-oracle-failed*"))

    first = stats["execs"]
    corpus = len(campaign.corpus_files(work / "corpus"))
    assert cli.main(argv) == 0
    assert f"fuzz: resuming {work} ({corpus} corpus inputs)" in capsys.readouterr().out
    assert json.loads((work / "stats.json").read_text())["execs"] > first
    assert len(campaign.corpus_files(work / "corpus")) >= corpus


def test_a_sigterm_stops_the_engine_and_its_vm_and_keeps_the_state(tmp_path, monkeypatch,
                                                                    capsys):
    monkeypatch.setattr("svmfuzz.vm.config_from_args", _fake_vm(tmp_path))
    work = tmp_path / "campaign"
    timer = threading.Timer(8, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert cli.main(["fuzz", "--build-dir", str(build_dir()), "--workdir", str(work),
                         "--minutes", "5", "--progress-seconds", "1",
                         "--program-timeout-ms", "500"]) == 130
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert "svmfuzz: interrupted" in capsys.readouterr().err
    # Nothing of the campaign runs on: no engine, no stand-in QEMU of it.
    left = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True).stdout
    assert left == "", left
    assert json.loads((work / "stats.json").read_text())["engine"] == "libfuzzer"
    assert campaign.corpus_files(work / "corpus")


def test_a_harness_that_cannot_boot_fails_the_campaign(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("svmfuzz.vm.config_from_args", _fake_vm(tmp_path))
    monkeypatch.setenv("FAKE_QEMU_MODE", "die")
    work = tmp_path / "campaign"
    assert cli.main(["fuzz", "--build-dir", str(build_dir()), "--workdir", str(work),
                     "--minutes", "1", "--progress-seconds", "1"]) == 1
    out = capsys.readouterr().out
    assert "fuzz: FAILED: the engine exited with 77: campaign: the guest did not boot, 3 time(s)" in out


def test_buckets_by_title_most_reproducible_first():
    t = campaign.CrashTriage
    results = [
        t("c1", runs=3, titles={"INFO: task hung in svmdev_fence_wait": 3}),
        t("c2", runs=3, titles={"livelock in svmdev_exclusive": 1,
                                "INFO: task hung in svmdev_fence_wait": 2}),
        t("c3", runs=3, titles={}),
        t("c4", runs=3, titles={"livelock in svmdev_exclusive": 3}),
    ]
    buckets = campaign.bucket(results)
    assert [(b.title, [c.input for c in b.crashes]) for b in buckets] == [
        ("INFO: task hung in svmdev_fence_wait", ["c1", "c2"]),
        ("livelock in svmdev_exclusive", ["c4"]),
        (campaign.NO_FINDING, ["c3"]),
    ]
    assert [c.reproduced for c in buckets[0].crashes] == [3, 2]
    assert buckets[2].crashes[0].reproduced == 0
    text = campaign.triage_text(buckets, [{"input": "c5", "why": "it is empty: no program to run"}])
    assert "  c2: reproduced 2/3\n    other runs: livelock in svmdev_exclusive (1)\n" in text
    assert text.endswith("skipped c5: it is empty: no program to run\n")


class _FakeRunner:
    """Gives each program the finding its last byte names, always."""
    titles = {1: "INFO: task hung in svmdev_fence_wait", 2: "data corruption in dev_read"}

    def __init__(self, cfg, log):
        self.life = types.SimpleNamespace(console_log=Path("/vm/vm0-life000.console.log"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    knobs_seen: list = []

    def run(self, program, knobs=None):
        self.knobs_seen.append(knobs)
        title = self.titles.get(program[-1])
        findings = [Finding(title=title, category="hang", frame="", report="")] if title else []
        result = protocol.ExecResult(id=1, status=protocol.Status.OK, detail=0, duration_us=1)
        return types.SimpleNamespace(findings=findings, result=result, life=self.life)


def _saved(tmp_path, monkeypatch, runner_class, lasts: dict[str, int]) -> Path:
    """DIR/crashes with an input per name, triaged by `runner_class`."""
    monkeypatch.setattr("svmfuzz.vm.config_from_args", lambda args, run, log: None)
    monkeypatch.setattr(native, "RunnerConfig", lambda vm, **kw: kw, raising=False)
    monkeypatch.setattr("svmfuzz.runner.Runner", runner_class)
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    # mmap buf=0 pages=1, then a short record that orders the finding.
    for name, last in lasts.items():
        (crashes / name).write_bytes(bytes([0, 0, 0, 1, 0, 0, 0, last]))
    return crashes


def test_triage_reruns_buckets_and_skips_what_it_cannot_run(tmp_path, monkeypatch,
                                                            capsys):
    crashes = _saved(tmp_path, monkeypatch, _FakeRunner,
                     {"crash-a": 1, "crash-b": 2, "crash-c": 1, "crash-d": 7})
    (crashes / "crash-a.txt").write_text("kind: stuck\nwhy: stuck: a task in state D\n")
    (crashes / "crash-empty").write_bytes(b"")
    (crashes / "crash-corrupt").write_bytes(b"\xff\xff\xfe")
    assert cli.main(["triage", str(tmp_path), "--build-dir", str(build_dir()),
                     "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert f"triage: skipping {crashes / 'crash-empty'}: it is empty: no program to run" in out
    assert f"skipping {crashes / 'crash-corrupt'}: it decodes to a program with no op" in out
    report = json.loads((tmp_path / "triage.json").read_text())
    assert [(b["title"], [Path(c["input"]).name for c in b["crashes"]]) for b in report["buckets"]] == [
        ("INFO: task hung in svmdev_fence_wait", ["crash-a", "crash-c"]),
        ("data corruption in dev_read", ["crash-b"]),
        (campaign.NO_FINDING, ["crash-d"]),
    ]
    hung = report["buckets"][0]["crashes"][0]
    assert (hung["reproduced"], hung["runs"]) == (2, 2)
    assert hung["why"] == ["stuck: a task in state D"]
    assert hung["console_log"] == "/vm/vm0-life000.console.log"
    assert "mmap" in hung["program"]
    assert len(report["skipped"]) == 2
    text = (tmp_path / "triage.txt").read_text()
    assert text.startswith("2 unknown finding(s), 0 known, 1 input(s) that did not reproduce\n\n"
                           "INFO: task hung in svmdev_fence_wait\n  ")
    assert "    campaign saw: stuck: a task in state D\n" in text
    assert report["unknown"] == 2


def test_triage_marks_known_outcomes_and_runs_with_the_campaigns_knobs(tmp_path, monkeypatch,
                                                                      capsys):
    _saved(tmp_path, monkeypatch, _FakeRunner, {"crash-a": 1, "crash-b": 2})
    (tmp_path / "campaign.conf").write_text("op_timeout_ms = 3000\nknobs = break_fence_wait=1\n")
    known = tmp_path / "known"
    known.write_text("INFO: task hung in svmdev_* | the campaign's own breakage knob\n")
    _FakeRunner.knobs_seen = []
    assert cli.main(["triage", str(tmp_path), "--build-dir", str(build_dir()),
                     "--repeat", "1", "--known", str(known)]) == 0
    out = capsys.readouterr().out
    assert "1 unknown finding(s), 1 known" in out
    assert _FakeRunner.knobs_seen == [protocol.Knobs(break_fence_wait=1)] * 2
    report = json.loads((tmp_path / "triage.json").read_text())
    assert report["unknown"] == 1
    assert {b["title"]: b["known"] for b in report["buckets"]} == {
        "INFO: task hung in svmdev_fence_wait": "the campaign's own breakage knob",
        "data corruption in dev_read": ""}
    assert "INFO: task hung in svmdev_fence_wait (known: the campaign's own breakage knob)" in \
        (tmp_path / "triage.txt").read_text()


class _MarkerRunner(_FakeRunner):
    """A finding whenever the program holds a drop_acks record."""
    marker = b""
    programs: list = []

    def run(self, program, knobs=None):
        self.programs.append(program)
        title = self.titles[2] if self.marker in program else None
        findings = [Finding(title=title, category="data", frame="", report="")] if title else []
        result = protocol.ExecResult(id=1, status=protocol.Status.OK, detail=0, duration_us=1)
        return types.SimpleNamespace(findings=findings, result=result, life=self.life)


def test_triage_minimizes_the_best_input_of_a_bucket_and_writes_it_as_c(tmp_path, monkeypatch,
                                                                         capsys):
    crashes = _saved(tmp_path, monkeypatch, _MarkerRunner, {})
    texts = {"marker": "drop_acks count=7\n", "input": """
        mmap buf=0 pages=8 kind=anon prot=rw
        write buf=0 off=0 pages=8 seed=1
        yield
        mirror buf=0 off=0 pages=8 write=no
        drop_acks count=7
        sleep us=2000
        munmap buf=0 off=0 pages=8
    """}
    encoded = runner.encode_texts(texts)
    _MarkerRunner.marker = encoded["marker"]
    _MarkerRunner.programs = []
    (crashes / "crash-x").write_bytes(encoded["input"])
    assert cli.main(["triage", str(tmp_path), "--build-dir", str(build_dir()),
                     "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "triage: crash-x: 7 -> 1 ops in crash-x.min.svmp" in out, out
    minimized = (crashes / "crash-x.min.svmp").read_text()
    assert minimize.ops(minimized) == ["drop_acks count=7"]
    assert minimized.startswith("# Minimized from crash-x: data corruption in dev_read\n")
    assert "drop_acks" in (crashes / "crash-x.c").read_text()
    (b,) = json.loads((tmp_path / "triage.json").read_text())["buckets"]
    (c,) = b["crashes"]
    assert (c["minimized"], c["minimized_ops"]) == (str(crashes / "crash-x.min.svmp"), 1)
    assert c["reproducer"] == str(crashes / "crash-x.c")
    # Each step ran at most twice, and a failed one once.
    assert len(_MarkerRunner.programs) < 2 + 2 * 30
    # What triage wrote beside the input is not an input of the next triage.
    assert campaign.saved_inputs(crashes) == [crashes / "crash-x"]


def test_triage_refuses_a_malformed_known_list_and_bad_knobs(tmp_path, monkeypatch):
    _saved(tmp_path, monkeypatch, _FakeRunner, {"crash-a": 1})
    known = tmp_path / "known"
    known.write_text("a title without its reason\n")
    with pytest.raises(SvmfuzzError, match=r"known:1: want"):
        campaign.triage_command(cli.make_parser().parse_args(
            ["triage", str(tmp_path), "--known", str(known)]), print)
    (tmp_path / "campaign.conf").write_text("knobs = break_everything=1\n")
    with pytest.raises(SvmfuzzError, match="knobs: want name=number"):
        campaign.triage_command(cli.make_parser().parse_args(["triage", str(tmp_path)]), print)


def test_triage_runs_the_campaigns_vm_unless_told_otherwise(tmp_path):
    (tmp_path / "campaign.conf").write_text("devices = 2\nvram = 8M\nmemory = 1G\n")
    args = cli.make_parser().parse_args(["triage", str(tmp_path), "--memory", "3G"])
    campaign.campaign_settings(tmp_path, args)
    assert (args.devices, args.vram, args.memory, args.cpus) == (2, "8M", "3G", 2)
    (tmp_path / "campaign.conf").write_text("devices = two\n")
    fresh = cli.make_parser().parse_args(["triage", str(tmp_path)])
    with pytest.raises(SvmfuzzError, match="bad devices: 'two'"):
        campaign.campaign_settings(tmp_path, fresh)


def test_write_atomic_replaces_the_file_whole(tmp_path):
    path = tmp_path / "triage.json"
    campaign.write_atomic(path, "{}\n")
    campaign.write_atomic(path, b"[1]\n")
    assert path.read_text() == "[1]\n"
    assert [p.name for p in tmp_path.iterdir()] == ["triage.json"]
    assert path.stat().st_mode & 0o777 == 0o644
    (tmp_path / ".triage.json.tmp-ab12cd_x").write_text("half")
    (tmp_path / ".other.tmp-ab12cd").write_text("not triage's")
    campaign.remove_temporaries(tmp_path, "triage.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-ab12cd", "triage.json"]


def test_a_second_fuzz_on_the_directory_is_refused(tmp_path, capsys):
    fd = campaign.lock_campaign(tmp_path)
    try:
        assert (tmp_path / campaign.LOCK_FILE).read_text() == f"{os.getpid()}\n"
        assert cli.main(["fuzz", "--build-dir", str(build_dir()), "--workdir", str(tmp_path),
                         "--minutes", "0.1"]) == 1
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert f"svmfuzz: campaign directory {tmp_path} is in use by pid {os.getpid()}\n" == err
    assert not (tmp_path / "corpus").exists()
    os.close(campaign.lock_campaign(tmp_path))


def test_the_harness_refuses_a_directory_in_use(tmp_path):
    harness = build_dir() / "fuzz" / "campaign" / campaign.HARNESS["libfuzzer"]
    if not harness.is_file():
        pytest.skip("the libFuzzer harness is not built")
    vm_cfg = types.SimpleNamespace(qemu=Path("/q"), kernel=Path("/k"), initramfs=Path("/i"),
                                   accel="tcg", cpus=1, memory="1G", devices=1, vram="",
                                   extra_append=[])
    campaign.write_config(tmp_path / "campaign.conf", vm_cfg, tmp_path, "libfuzzer", 5, 100, 100)
    # Held by a process that is not the harness's ancestor.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from svmfuzz import campaign; campaign.lock_campaign(Path(sys.argv[1])); "
         "print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=Path(campaign.__file__).parents[1])
    try:
        assert holder.stdout.readline() == "held\n"
        (tmp_path / "corpus").mkdir()
        (tmp_path / "corpus" / "a").write_bytes(b"\x01")
        done = subprocess.run([str(harness), "-runs=1", f"-artifact_prefix={tmp_path}/",
                               str(tmp_path / "corpus")], cwd=tmp_path,
                              env=dict(os.environ, SVMFUZZ_CAMPAIGN=str(tmp_path / "campaign.conf")),
                              capture_output=True, text=True, timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode != 0
    assert (f"campaign: campaign directory {tmp_path} is in use by pid {holder.pid}\n"
            in done.stderr), done.stderr


def _seeds(tmp_path, bad: bool) -> Path:
    seeds = tmp_path / "seeds"
    seeds.mkdir(exist_ok=True)
    for p in sorted(campaign.SEEDS.glob("*.svmp"))[:3]:
        shutil.copy(p, seeds)
    if bad:
        (seeds / "zz_bad.svmp").write_text("mmap buf=0 pages=1\n")
    return seeds


def test_a_bad_seed_is_named_and_leaves_no_corpus(tmp_path):
    work = tmp_path / "campaign"
    with pytest.raises(SvmfuzzError, match=r"bad seed program: .*zz_bad\.svmp:1"):
        campaign.seed(work, _seeds(tmp_path, bad=True), print)
    assert sorted(p.name for p in work.iterdir()) == []
    (tmp_path / "seeds" / "zz_bad.svmp").unlink()
    assert campaign.seed(work, tmp_path / "seeds", print) == 3
    assert len(campaign.corpus_files(work / "corpus")) == 3


def test_seeding_killed_at_each_step_is_never_resumed_half_done(tmp_path):
    seeds = _seeds(tmp_path, bad=False)
    killed = 0
    for at in range(1, 20):
        work = tmp_path / f"campaign{at}"
        done = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; "
             "from svmfuzz import campaign; "
             "campaign.seed(Path(sys.argv[1]), Path(sys.argv[2]), print)",
             str(work), str(seeds)],
            env=dict(os.environ, **{campaign.KILL_AT_WRITE_ENV: str(at)}),
            cwd=Path(campaign.__file__).parents[1], capture_output=True, text=True)
        if done.returncode == 0:
            break
        assert done.returncode == -signal.SIGKILL, done.stderr
        killed += 1
        # A corpus is there whole, or not at all.
        assert len(campaign.corpus_files(work / "corpus")) in (0, 3)
        said = []
        assert campaign.seed(work, seeds, said.append) == 3
        assert sorted(p.name for p in work.iterdir()) == ["corpus"]
    # A step per encoded seed and one after the rename.
    assert killed == 4


class _RaisingRunner(_FakeRunner):
    """Like _FakeRunner; a program ending in 3 gets a result no one can read,
    one ending in 4 stands for triage being killed."""

    def run(self, program, knobs=None):
        if program[-1] == 3:
            raise protocol.ProtocolError("bad RESULT: 99 is not a valid Status")
        if program[-1] == 4:
            raise KeyboardInterrupt
        return super().run(program)


def test_triage_writes_as_it_goes_and_an_odd_result_is_a_finding(tmp_path, monkeypatch,
                                                                  capsys):
    _saved(tmp_path, monkeypatch, _RaisingRunner, {"crash-a": 1, "crash-b": 3, "crash-c": 4})
    assert cli.main(["triage", str(tmp_path), "--build-dir", str(build_dir()),
                     "--repeat", "2"]) == 130
    out = capsys.readouterr().out
    assert "triage: crash-b: the run raised ProtocolError: bad RESULT: 99 is not a valid Status" in out
    report = json.loads((tmp_path / "triage.json").read_text())
    assert [(b["title"], [Path(c["input"]).name for c in b["crashes"]]) for b in report["buckets"]] == [
        ("INFO: task hung in svmdev_fence_wait", ["crash-a"]),
        (f"{campaign.TRIAGE_ERROR} ProtocolError", ["crash-b"]),
    ]
    assert "crash-b: reproduced 2/2" in (tmp_path / "triage.txt").read_text()
