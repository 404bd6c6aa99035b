"""Fuzz campaigns against the guest, and the triage of what they found.

`svmfuzz fuzz` runs svmfuzz-guest-fuzz (fuzz/campaign), the libFuzzer or
AFL++ build, on a campaign directory:

    DIR/campaign.conf   what the harness runs (QEMU, kernel, initramfs, VM, timeouts)
    DIR/corpus/         the seeds, then libFuzzer's corpus (AFL++'s seeds)
    DIR/afl/            AFL++'s output; its queue is its corpus
    DIR/crashes/        crash-<title>-<hash> inputs with a finding, titled by the
                        oracles triage uses; .txt: the titles and what the harness
                        saw; triage adds .min.svmp and .c
    DIR/stats.json      execs, execs/s, distinct guest PCs, VM lives, findings
    DIR/vm/             the console log of each VM life
    DIR/engine.log      what the engine printed

A directory that holds a corpus is resumed. `svmfuzz triage DIR` runs each
saved input again with every oracle (runner.Runner), buckets them by title
and writes DIR/triage.json and DIR/triage.txt.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from svmfuzz import known, native, protocol, symbolize
from svmfuzz.errors import SvmfuzzError
from svmfuzz.paths import REPO_ROOT

HARNESS = {"libfuzzer": "svmfuzz-guest-fuzz", "afl": "svmfuzz-guest-fuzz-afl"}
# fuzz/campaign/afl_mutator.cc: AFL++'s structured mutator (libFuzzer's is
# linked into its harness).
AFL_MUTATOR = "libsvmfuzz-afl-mutator.so"
# fuzz/campaign/afl.cc's map of guest PCs.
AFL_MAP_SIZE = 1 << 18
SEEDS = REPO_ROOT / "corpus" / "programs"
# Inputs longer than this are not generated: kMaxOps ops fit well within it.
MAX_LEN = 4096
# How long a harness gets past the campaign's end to finish its input.
STOP_GRACE = 5
NO_FINDING = "no finding"
# fuzz/campaign/campaign.h: kLockFile, kLockFdEnv, kKillAtWriteEnv.
LOCK_FILE = "campaign.lock"
LOCK_FD_ENV = "SVMFUZZ_CAMPAIGN_LOCK_FD"
KILL_AT_WRITE_ENV = "SVMFUZZ_KILL_AT_WRITE"
_kill_steps = [0, 0]  # pid, steps counted in it

# "#1234  NEW    cov: 12 ft: 345 corp: 67/8910b lim: 4096 exec/s: 3 rss: 40Mb ..."
_LIBFUZZER_STATUS = re.compile(
    r"^#(?P<execs>\d+)\s+(?P<event>[A-Z]+)\s.*?\bcorp: (?P<corpus>\d+)/\S+"
    r"(?:.*?\bexec/s: (?P<rate>\d+))?")


@dataclass
class Progress:
    """What the progress line shows; each engine fills in what it knows."""
    seconds: float = 0.0
    execs: int = 0
    execs_per_sec: float = 0.0
    guest_pcs: int = 0
    corpus: int = 0
    findings: int = 0
    saved: int = 0
    lives: int = 0

    def line(self) -> str:
        m, s = divmod(int(self.seconds), 60)
        return (f"fuzz: {m}m{s:02d}s execs {self.execs} ({self.execs_per_sec:.1f}/s) "
                f"guest PCs {self.guest_pcs} corpus {self.corpus} "
                f"findings {self.findings} (saved {self.saved}) lives {self.lives}")


def parse_libfuzzer(line: str) -> dict | None:
    """libFuzzer's status line ("#N NEW ... corp: C/... exec/s: R"), or None."""
    m = _LIBFUZZER_STATUS.match(line)
    if not m:
        return None
    return {"execs": int(m["execs"]), "event": m["event"], "corpus": int(m["corpus"]),
            "execs_per_sec": int(m["rate"]) if m["rate"] else None}


def parse_afl_stats(text: str) -> dict:
    """AFL++'s fuzzer_stats ("key : value" lines)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def read_stats(workdir: Path) -> dict:
    """The harness's stats.json; {} before its first write."""
    try:
        return json.loads((workdir / "stats.json").read_text())
    except (OSError, ValueError):
        return {}


def progress(workdir: Path, engine: str, seconds: float, libfuzzer_status: dict | None) -> Progress:
    stats = read_stats(workdir)
    p = Progress(seconds=seconds, execs=stats.get("execs", 0),
                 execs_per_sec=stats.get("execs_per_sec", 0.0),
                 guest_pcs=stats.get("guest_pcs", 0), findings=stats.get("findings", 0),
                 saved=stats.get("saved", 0), lives=stats.get("lives", 0))
    if engine == "afl":
        try:
            afl = parse_afl_stats((workdir / "afl" / "default" / "fuzzer_stats").read_text())
            p.corpus = int(afl.get("corpus_count", 0))
        except OSError:
            p.corpus = len(corpus_files(workdir / "corpus"))
    elif libfuzzer_status:
        p.corpus = libfuzzer_status["corpus"]
    else:
        p.corpus = len(corpus_files(workdir / "corpus"))
    return p


def corpus_files(corpus: Path) -> list[Path]:
    if not corpus.is_dir():
        return []
    return sorted(p for p in corpus.iterdir() if p.is_file() and not p.name.startswith("."))


def _kill_point() -> None:
    """A write step where a test may have the process killed (KILL_AT_WRITE_ENV:
    the Nth step of this process)."""
    at = os.environ.get(KILL_AT_WRITE_ENV)
    if not at:
        return
    if _kill_steps[0] != os.getpid():
        _kill_steps[:] = [os.getpid(), 0]
    _kill_steps[1] += 1
    if _kill_steps[1] == int(at):
        os.kill(os.getpid(), signal.SIGKILL)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | str) -> None:
    """`path` written whole: a temporary beside it (.NAME.tmp-XXXXXXXX), synced,
    renamed over it, and the directory synced so the rename lasts."""
    if isinstance(data, str):
        data = data.encode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, data[:len(data) // 2])
        _kill_point()
        view = memoryview(data)[len(data) // 2:]
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        _kill_point()
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    _kill_point()
    _sync_dir(path.parent)


def remove_temporaries(workdir: Path, *names: str) -> None:
    """What a killed write_atomic (or seed) of DIR/<name> left behind."""
    for p in workdir.iterdir():
        if any(re.fullmatch(rf"\.{re.escape(n)}\.tmp-[A-Za-z0-9_]{{6,8}}", p.name) for n in names):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def lock_campaign(workdir: Path) -> int:
    """Takes DIR/campaign.lock for this process (its descriptor, to pass to the
    harness); another `svmfuzz fuzz` on DIR would kill this one's VMs."""
    path = workdir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = path.read_text().strip()
        os.close(fd)
        who = f"pid {holder}" if holder.isdigit() else "another process"
        raise SvmfuzzError(f"campaign directory {workdir} is in use by {who}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def seed(workdir: Path, seeds: Path, log) -> int:
    """Makes DIR/corpus from the binary form of seeds/*.svmp, or keeps the
    campaign's corpus already there. How many inputs it holds. The corpus is
    written in a temporary directory renamed into place, so a bad seed or a
    kill leaves no half-seeded corpus to be taken for a campaign."""
    from svmfuzz import runner

    corpus = workdir / "corpus"
    workdir.mkdir(parents=True, exist_ok=True)
    remove_temporaries(workdir, corpus.name, "campaign.conf")
    have = corpus_files(corpus)
    if have:
        log(f"fuzz: resuming {workdir} ({len(have)} corpus inputs)")
        return len(have)
    texts = sorted(seeds.glob("*.svmp"))
    if not texts:
        raise SvmfuzzError(f"no seed programs (*.svmp) in {seeds}")
    try:
        encoded = runner.encode_programs(texts)
    except SvmfuzzError as e:
        raise SvmfuzzError(f"bad seed program: {e}") from None
    tmp = Path(tempfile.mkdtemp(prefix=f".{corpus.name}.tmp-", dir=workdir))
    try:
        for text, data in zip(texts, encoded):
            with open(tmp / f"{text.stem}.bin", "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            _kill_point()
        _sync_dir(tmp)
        if corpus.is_dir():
            corpus.rmdir()  # empty: a corpus is never left half-made
        os.rename(tmp, corpus)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _kill_point()
    _sync_dir(workdir)
    log(f"fuzz: seeded {corpus} with {len(texts)} programs from {seeds}")
    return len(texts)


def write_config(path: Path, vm_cfg, workdir: Path, engine: str, boot_timeout: float,
                 op_timeout_ms: int, program_timeout_ms: int, reset: str = "snapshot",
                 knobs: str = "") -> None:
    """The harness's campaign.conf (fuzz/campaign/campaign.h, ParseConfig)."""
    lines = {
        "engine": engine, "qemu": vm_cfg.qemu, "kernel": vm_cfg.kernel,
        "initramfs": vm_cfg.initramfs, "workdir": workdir, "vm_workdir": workdir / "vm",
        "accel": vm_cfg.accel, "cpus": vm_cfg.cpus, "memory": vm_cfg.memory,
        "devices": vm_cfg.devices, "vram": vm_cfg.vram, "append": " ".join(vm_cfg.extra_append),
        "boot_timeout": boot_timeout, "op_timeout_ms": op_timeout_ms,
        "program_timeout_ms": program_timeout_ms, "reset": reset,
        # The oracles the harness judges with: this package's, as triage's.
        "pyharness": REPO_ROOT / "pyharness",
    }
    if knobs.strip():
        lines["knobs"] = " ".join(knobs.split())
    write_atomic(path, "".join(f"{k} = {v}\n" for k, v in lines.items()))


def read_config(path: Path) -> dict[str, str]:
    out = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                out[key.strip()] = value.strip()
    return out


def harness(build: Path, engine: str) -> Path:
    path = build / "fuzz" / "campaign" / HARNESS[engine]
    if not path.is_file():
        raise SvmfuzzError(f"no {path}: build it (cmake --build {build} --target {HARNESS[engine]})")
    return path


def afl_mutator(build: Path) -> Path:
    path = build / "fuzz" / "campaign" / AFL_MUTATOR
    if not path.is_file():
        raise SvmfuzzError(f"no {path}: build it "
                           f"(cmake --build {build} --target svmfuzz-afl-mutator)")
    return path


def engine_command(engine: str, binary: Path, workdir: Path, seconds: int,
                   exec_timeout: int, mutator: Path | None = None,
                   mutation: str = "structured") -> tuple[list[str], dict[str, str]]:
    """The engine's command line and environment for a campaign of `seconds`;
    `exec_timeout`: the longest one input may take, a boot included;
    `mutator`: AFL++'s custom mutator library; `mutation`: "structured", or
    "bytes" for the engine's byte mutations alone (the baseline the
    structured mutator is measured against)."""
    env = dict(os.environ, SVMFUZZ_CAMPAIGN=str(workdir / "campaign.conf"),
               SVMFUZZ_MUTATOR=mutation)
    if mutation == "bytes":
        mutator = None
    if engine == "libfuzzer":
        artifacts = workdir / "engine-artifacts"
        artifacts.mkdir(exist_ok=True)
        # len_control=0: a guest program runs a few times a second, too few
        # for libFuzzer's slow growth of input lengths.
        return [str(binary), f"-max_total_time={seconds}", f"-timeout={exec_timeout}",
                f"-max_len={MAX_LEN}", "-len_control=0", "-rss_limit_mb=4096",
                "-report_slow_units=1000000", "-print_final_stats=1",
                f"-artifact_prefix={artifacts}/", str(workdir / "corpus")], env
    afl = shutil.which("afl-fuzz")
    if afl is None:
        raise SvmfuzzError("afl-fuzz is not installed (Debian package afl++)")
    # AFL_DEBUG_CHILD: the harness's own lines (saved findings, VM lives)
    # reach the engine's log. Calibrating each seed eight times takes minutes
    # at a few programs a second: AFL_NO_STARTUP_CALIBRATION, AFL_FAST_CAL.
    env.update(AFL_MAP_SIZE=str(AFL_MAP_SIZE), AFL_NO_UI="1", AFL_AUTORESUME="1",
               AFL_SKIP_CPUFREQ="1", AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES="1",
               AFL_NO_AFFINITY="1", AFL_DEBUG_CHILD="1", AFL_NO_STARTUP_CALIBRATION="1",
               AFL_FAST_CAL="1")
    # The structured mutator runs beside AFL++'s own havoc, not instead of it
    # (no AFL_CUSTOM_MUTATOR_ONLY): every byte string decodes to a valid
    # program, so havoc wastes no run on a rejected input, and its flips reach
    # argument values and op sequences the structured steps do not prefer.
    if mutator is not None:
        env["AFL_CUSTOM_MUTATOR_LIBRARY"] = str(mutator)
    return [afl, "-i", str(workdir / "corpus"), "-o", str(workdir / "afl"), "-V", str(seconds),
            "-t", str(exec_timeout * 1000), "-m", "none", "--", str(binary)], env


def _stop(proc: subprocess.Popen) -> None:
    """Ends the engine and whatever it started in its session."""
    for sig, wait in ((signal.SIGINT, STOP_GRACE), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def fuzz_command(args, log) -> int:
    build = Path(args.build_dir)
    workdir = Path(args.workdir or build / "campaign").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    lock = lock_campaign(workdir)
    try:
        return _fuzz(args, build, workdir, lock, log)
    finally:
        os.close(lock)


def _fuzz(args, build: Path, workdir: Path, lock: int, log) -> int:
    from svmfuzz.vm import config_from_args

    binary = harness(build, args.engine)
    mutator = afl_mutator(build) if args.engine == "afl" else None
    seeds = seed(workdir, Path(args.seeds), log)
    # The console logs of a campaign are its own (DIR/vm), not --workdir's.
    args.workdir = str(workdir / "vm")
    vm_cfg = config_from_args(args, "executor", log)
    parse_knobs(args.knobs, "--knobs")
    write_config(workdir / "campaign.conf", vm_cfg, workdir, args.engine, args.timeout,
                 args.op_timeout_ms, args.program_timeout_ms, args.reset,
                 args.knobs)
    seconds = max(1, int(args.minutes * 60))
    exec_timeout = int(args.timeout + args.program_timeout_ms / 1000 + 60)
    argv, env = engine_command(args.engine, binary, workdir, seconds, exec_timeout, mutator,
                               args.mutator)
    # The harness shares this lock rather than taking one of its own.
    env[LOCK_FD_ENV] = str(lock)
    log(f"fuzz: {args.engine} on {workdir} for {args.minutes:g} min ({vm_cfg.accel}, "
        f"{vm_cfg.devices} svmdev device(s), {args.mutator} mutation); engine output in "
        f"{workdir / 'engine.log'}")
    before = read_stats(workdir)
    start = time.monotonic()
    status = None
    with open(workdir / "engine.log", "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                pass_fds=(lock,))
        try:
            # libFuzzer stops between inputs once its time is up; AFL++
            # counts its time from the end of its dry run, and keeps its
            # state when it is interrupted.
            limit = seconds + (exec_timeout if args.engine == "libfuzzer" else STOP_GRACE)
            status = _follow(proc, workdir, args, start, limit, log)
        finally:
            ended = proc.poll() is not None
            _stop(proc)
            native.kill_stray_vms(workdir / "vm")
    elapsed = time.monotonic() - start
    final = progress(workdir, args.engine, elapsed, status)
    execs = final.execs - before.get("execs", 0)
    log(f"fuzz: done after {elapsed / 60:.1f} min: {execs} execs ({execs / elapsed:.1f}/s), "
        f"{final.guest_pcs} guest PCs, corpus {seeds} -> {final.corpus}, "
        f"{final.findings - before.get('findings', 0)} finding(s) "
        f"({final.saved} saved in {workdir / 'crashes'}), {final.lives} VM lives")
    if final.saved:
        log(f"fuzz: triage them with: ./svmfuzz triage {workdir}")
    failed = _engine_failure(workdir, proc.returncode) if ended else ""
    if failed:
        log(f"fuzz: FAILED: {failed}")
        return 1
    return 0


def _follow(proc: subprocess.Popen, workdir: Path, args, start: float, limit: float,
            log) -> dict | None:
    """Shows a progress line every few seconds and the harness's saved
    findings as they come, until the engine ends or passes `limit` seconds.
    Returns libFuzzer's last status."""
    status = None
    offset = (workdir / "engine.log").stat().st_size
    shown = start
    while proc.poll() is None and time.monotonic() - start < limit:
        time.sleep(min(1.0, args.progress_seconds))
        with open(workdir / "engine.log", "rb") as f:
            f.seek(offset)
            chunk = f.read()
        # Whole lines only: the rest is read next time.
        cut = chunk.rfind(b"\n") + 1
        offset += cut
        for line in chunk[:cut].decode(errors="replace").splitlines():
            status = parse_libfuzzer(line) or status
            if line.startswith("campaign: "):
                log(f"fuzz: {line[len('campaign: '):]}")
        if time.monotonic() - shown >= args.progress_seconds:
            shown = time.monotonic()
            log(progress(workdir, args.engine, shown - start, status).line())
    return status


def _engine_failure(workdir: Path, returncode: int | None) -> str:
    """Why the engine failed, from the end of its log; "" when it did not."""
    if returncode == 0:
        return ""
    tail = (workdir / "engine.log").read_text(errors="replace").splitlines()[-40:]
    # The harness says why it gave up; else the engine does.
    said = ([line for line in tail if line.startswith("campaign: ")] or
            [line for line in tail if "PROGRAM ABORT" in line or "ERROR" in line])
    return f"the engine exited with {returncode}" + (f": {said[-1]}" if said else "")


@dataclass
class CrashTriage:
    input: str
    runs: int = 0
    reproduced: int = 0                  # runs whose primary finding had the bucket's title
    titles: dict[str, int] = field(default_factory=dict)
    console_log: str = ""                # of a run that reproduced it
    report: str = ""                     # its kernel report, symbolized when it could be
    minimized: str = ""                  # its minimal program (.min.svmp), when triage made one
    minimized_ops: int = 0
    reproducer: str = ""                 # that program as C (svmfuzz prog2c), or why there is none
    program: str = ""                    # its text form (decode)
    why: list[str] = field(default_factory=list)  # what the campaign saw (crash-*.txt)


@dataclass
class Bucket:
    title: str
    crashes: list[CrashTriage] = field(default_factory=list)
    known: str = ""     # why a correct kernel gives this title (known outcomes), or ""


def saved_inputs(crashes: Path) -> list[Path]:
    if not crashes.is_dir():
        return []
    # Beside each input: why it was saved (.txt), and triage's minimal
    # program (.min.svmp) and C reproducer (.c).
    return sorted(p for p in crashes.iterdir()
                  if p.is_file() and p.name.startswith("crash-")
                  and p.suffix not in (".txt", ".svmp", ".c"))


def check_input(path: Path) -> tuple[bytes | None, str]:
    """The input's bytes, or None and why it cannot be triaged."""
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, f"cannot read it: {e.strerror}"
    if not data:
        return None, "it is empty: no program to run"
    return data, ""


def decode(data: bytes) -> tuple[str, str]:
    """The text form of a binary input, or "" and why there is none."""
    program = native.decode_program(data)
    if not program:
        return "", "it decodes to a program with no op"
    return program, ""


def outcome_title(outcome) -> str:
    if outcome.findings:
        return outcome.findings[0].title
    if outcome.result is not None and outcome.result.status != protocol.Status.OK:
        return outcome.result.title()
    return NO_FINDING


def bucket(results: list[CrashTriage]) -> list[Bucket]:
    """Crashes by the title most of their runs gave; the most reproducible
    buckets first, "no finding" (did not reproduce) last."""
    buckets: dict[str, Bucket] = {}
    for r in results:
        title = Counter(r.titles).most_common(1)[0][0] if r.titles else NO_FINDING
        r.reproduced = r.titles.get(title, 0) if title != NO_FINDING else 0
        buckets.setdefault(title, Bucket(title)).crashes.append(r)
    return sorted(buckets.values(), key=lambda b: (b.title == NO_FINDING,
                                                   -max(c.reproduced for c in b.crashes), b.title))


def mark_known(buckets: list[Bucket], entries: list[known.Known]) -> None:
    for b in buckets:
        k = known.match(b.title, entries) if b.title != NO_FINDING else None
        b.known = k.reason if k else ""


def headline(buckets: list[Bucket]) -> str:
    """The count that matters: findings no known outcome explains."""
    found = [b for b in buckets if b.title != NO_FINDING]
    unknown = sum(1 for b in found if not b.known)
    return (f"{unknown} unknown finding(s), {len(found) - unknown} known, "
            f"{sum(len(b.crashes) for b in buckets if b.title == NO_FINDING)} input(s) "
            "that did not reproduce")


def triage_text(buckets: list[Bucket], skipped: list[dict]) -> str:
    lines = [headline(buckets), ""]
    for b in buckets:
        lines.append(f"{b.title}" + (f" (known: {b.known})" if b.known else ""))
        for c in b.crashes:
            lines.append(f"  {c.input}: reproduced {c.reproduced}/{c.runs}")
            others = {t: n for t, n in c.titles.items() if t != b.title}
            if others:
                lines.append("    other runs: " + ", ".join(f"{t} ({n})" for t, n in others.items()))
            if c.why:
                lines.append(f"    campaign saw: {c.why[0]}")
            if c.console_log:
                lines.append(f"    console: {c.console_log}")
            if c.minimized:
                lines.append(f"    minimized: {c.minimized} ({c.minimized_ops} ops)")
            if c.reproducer:
                lines.append(f"    C reproducer: {c.reproducer}")
            lines += [f"    > {line}" for line in c.report.splitlines()]
            lines += [f"    | {line}" for line in c.program.splitlines()]
        lines.append("")
    for s in skipped:
        lines.append(f"skipped {s['input']}: {s['why']}")
    return "\n".join(lines).rstrip() + "\n"


def _campaign_saw(text: Path) -> list[str]:
    try:
        lines = text.read_text(errors="replace").splitlines()
    except OSError:
        return []
    # The titles the campaign's oracles gave, then what the harness saw.
    return ([line[7:] for line in lines if line.startswith("title: ")] +
            [line[5:] for line in lines if line.startswith("why: ")])


# A triage run that raised: a finding of its own, not the end of triage.
TRIAGE_ERROR = "triage: the run raised"


def parse_knobs(text: str, where: str = "campaign.conf: knobs") -> protocol.Knobs | None:
    """campaign.conf's `knobs` (or `where`'s): space-separated name=value of
    protocol.Knobs."""
    if not text.strip():
        return None
    names = {f.name for f in fields(protocol.Knobs)}
    values = {}
    for item in text.split():
        name, sep, value = item.partition("=")
        if not sep or name not in names or not value.isdigit():
            raise SvmfuzzError(f"{where}: want name=number with a name of "
                               f"{', '.join(sorted(names))}, got {item!r}")
        values[name] = int(value)
    return protocol.Knobs(**values)


def _triage_run(r, data: bytes, knobs: protocol.Knobs | None, path: Path,
                log) -> tuple[str, str, str]:
    """The title of one run of `data`, the console log of its life and the
    report of its primary finding."""
    try:
        o = r.run(data, knobs)
        return (outcome_title(o), str(o.life.console_log),
                o.findings[0].report if o.findings else "")
    except Exception as e:  # noqa: BLE001 - any odd result is the input's finding
        log(f"triage: {path.name}: the run raised {type(e).__name__}: {e}")
        life = getattr(r, "life", None)
        return f"{TRIAGE_ERROR} {type(e).__name__}", str(life.console_log) if life else "", ""


def campaign_settings(workdir: Path, args) -> tuple[protocol.Knobs | None, int, int]:
    """How DIR's campaign ran its programs (DIR/campaign.conf): its test-only
    driver knobs ("knobs = name=value ..."), op and program bounds (args' when
    it does not say), extra kernel arguments (into args.append unless given)
    and its VM's devices, VRAM, memory and vCPUs (into args where they are
    left at their defaults)."""
    conf = read_config(workdir / "campaign.conf")
    knobs = parse_knobs(conf.get("knobs", ""))
    op_timeout_ms = int(conf.get("op_timeout_ms", args.op_timeout_ms))
    program_timeout_ms = int(conf.get("program_timeout_ms", args.program_timeout_ms))
    if not args.append and conf.get("append"):
        args.append = conf["append"]
    for key, default, kind in (("devices", 1, int), ("vram", "", str), ("memory", "2G", str),
                               ("cpus", 2, int)):
        if conf.get(key) and getattr(args, key, default) == default:
            try:
                setattr(args, key, kind(conf[key]))
            except ValueError as e:
                raise SvmfuzzError(f"{workdir / 'campaign.conf'}: bad {key}: {conf[key]!r}") from e
    return knobs, op_timeout_ms, program_timeout_ms


def campaign_of(path: Path) -> Path | None:
    """The campaign directory of a saved input (DIR/crashes/crash-...), or None."""
    workdir = path.resolve().parent.parent
    if path.resolve().parent.name == "crashes" and (workdir / "campaign.conf").is_file():
        return workdir
    return None


def run_title(r, data: bytes, knobs: protocol.Knobs | None, what: str, log) -> str:
    """The title of one run of `data`."""
    return _triage_run(r, data, knobs, Path(what), log)[0]


def rerun(r, path: Path, data: bytes, program: str, knobs: protocol.Knobs | None, repeat: int,
          log, symbolizer=None) -> CrashTriage:
    """`repeat` runs of one input with every oracle: the titles they gave
    and the console log and report of a run that gave one, its frames
    given their source lines by `symbolizer` when there is one."""
    t = CrashTriage(str(path), program=program,
                    why=_campaign_saw(path.with_name(path.name + ".txt")))
    titles: Counter = Counter()
    for _ in range(repeat):
        title, console_log, report = _triage_run(r, data, knobs, path, log)
        titles[title] += 1
        t.runs += 1
        if title != NO_FINDING and not t.console_log:
            t.console_log, t.report = console_log, report
    t.titles = {k: v for k, v in titles.items() if k != NO_FINDING}
    if t.report and symbolizer is not None:
        try:
            t.report = symbolizer.report(t.report)
        except SvmfuzzError as e:
            log(f"triage: {path.name}: not symbolized: {e}")
    return t


def _write_triage(workdir: Path, repeat: int, results: list[CrashTriage],
                  skipped: list[dict], entries: list[known.Known]) -> list[Bucket]:
    buckets = bucket(results)
    mark_known(buckets, entries)
    report = {"dir": str(workdir), "repeat": repeat, "headline": headline(buckets),
              "unknown": sum(1 for b in buckets if b.title != NO_FINDING and not b.known),
              "buckets": [asdict(b) for b in buckets], "skipped": skipped}
    write_atomic(workdir / "triage.json", json.dumps(report, indent=2) + "\n")
    write_atomic(workdir / "triage.txt", triage_text(buckets, skipped))
    return buckets


def _minimize(r, crash: CrashTriage, title: str, knobs: protocol.Knobs | None, args,
              program_timeout_ms: int, log) -> None:
    """The best input of a bucket minimized, next to it, and written as C."""
    from svmfuzz import minimize, repro

    path = Path(crash.input)
    log(f"triage: minimizing {path.name} ({title}, {crash.reproduced}/{crash.runs})")
    holds = minimize.guest_holds(r, title, knobs, args.repeat, crash.reproduced, log)
    out = minimize.minimize(crash.program, holds, minimize.is_program, log, args.minimize_steps)
    target = minimize.minimized_path(path)
    minimize.write_minimized(target, out, title, crash.reproduced, crash.runs, path)
    crash.minimized, crash.minimized_ops = str(target), len(minimize.ops(out))
    log(f"triage: {path.name}: {len(minimize.ops(crash.program))} -> {crash.minimized_ops} ops "
        f"in {target.name}")
    try:
        source = repro.generate(target, knobs=knobs, program_timeout_ms=program_timeout_ms)
        c_path = path.with_name(path.name + ".c")
        write_atomic(c_path, source)
        crash.reproducer = str(c_path)
    except SvmfuzzError as e:
        crash.reproducer = f"none: {e}"


def triage_command(args, log) -> int:
    from svmfuzz import native, runner
    from svmfuzz.vm import config_from_args

    workdir = Path(args.dir).resolve()
    build = Path(args.build_dir)
    inputs = saved_inputs(workdir / "crashes")
    if not inputs:
        log(f"triage: no saved inputs in {workdir / 'crashes'}")
    try:
        entries = known.load(Path(args.known))
    except known.KnownError as e:
        raise SvmfuzzError(f"known outcomes: {e}") from e
    knobs, op_timeout_ms, program_timeout_ms = campaign_settings(workdir, args)
    # Before anything in DIR changes: a missing vmlinux is an error.
    symbolizer = symbolize.for_build(build) if inputs else None
    args.workdir = str(workdir / "triage-vm")
    remove_temporaries(workdir, "triage.json", "triage.txt")
    results, skipped = [], []
    todo = []
    for path in inputs:
        data, why = check_input(path)
        program = ""
        if data is not None:
            program, why = decode(data)
        if why:
            log(f"triage: skipping {path}: {why}")
            skipped.append({"input": str(path), "why": why})
            continue
        todo.append((path, data, program))
    if todo:
        cfg = native.RunnerConfig(config_from_args(args, "executor", log),
                                  boot_timeout=args.timeout, op_timeout_ms=op_timeout_ms,
                                  program_timeout_ms=program_timeout_ms,
                                  reset=runner.reset_mode(args.reset))
        start = time.monotonic()
        with runner.Runner(cfg, log) as r:
            for n, (path, data, program) in enumerate(todo, 1):
                t = rerun(r, path, data, program, knobs, args.repeat, log, symbolizer)
                results.append(t)
                left = (time.monotonic() - start) / n * (len(todo) - n)
                log(f"triage: {n}/{len(todo)} {path.name}: "
                    + (", ".join(f"{k} ({v}/{t.runs})" for k, v in t.titles.items())
                       or f"{NO_FINDING} (0/{t.runs})")
                    + (f"; ETA {int(left) // 60}:{int(left) % 60:02d}" if n < len(todo) else ""))
                # What is done so far lasts, whatever becomes of the rest.
                _write_triage(workdir, args.repeat, results, skipped, entries)
            if args.minimize_steps > 0:
                for b in _write_triage(workdir, args.repeat, results, skipped, entries):
                    if b.title == NO_FINDING or b.title.startswith(TRIAGE_ERROR) or b.known:
                        continue
                    _minimize(r, max(b.crashes, key=lambda c: c.reproduced), b.title, knobs,
                              args, program_timeout_ms, log)
                    _write_triage(workdir, args.repeat, results, skipped, entries)
    buckets = _write_triage(workdir, args.repeat, results, skipped, entries)
    for b in buckets:
        log(f"triage: {b.title}: {len(b.crashes)} input(s), best reproduced "
            f"{max(c.reproduced for c in b.crashes)}/{args.repeat}"
            + (f" (known: {b.known})" if b.known else ""))
    log(f"triage: {headline(buckets)}; {len(skipped)} skipped; {workdir / 'triage.txt'}")
    if results:
        log("triage: run one again with ./svmfuzz repro INPUT, or write it as C with "
            "./svmfuzz prog2c INPUT")
    return 0
