"""Running programs in the guest, VM life after VM life.

The C++ runner (fuzz/runner/runner.h, native.Runner) owns one VM at a time:
it sends each program to the executor, performs the program's device
actions (dev_access, fault_storm, delay_acks, drop_acks, fail_dma) through
the devices' control channels meanwhile, and returns what came back with the
console the kernel printed while it ran. It ends a VM life when the guest is
lost (QEMU exits, the executor stops answering or closes its port) or a
program left a task the kernel cannot kill, and boots the next one before
the next program. Every life keeps its own console log, named after the
life, so the console of a crash is never overwritten by the reboot that
follows it.

Here each program's outcome gets its findings (oracles/program.py): what the
kernel printed while it ran, what its result says, and what the devices
reported on their control channels; and a life whose kernel reported
trouble ends, so the next program gets a fresh kernel.
"""

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from svmfuzz import native, protocol
from svmfuzz.errors import SvmfuzzError
from svmfuzz.oracles.console import Finding
from svmfuzz.oracles import verdict
from svmfuzz.paths import REPO_ROOT
from svmfuzz.vm import config_from_args

UNREADABLE_RESULT = verdict.UNREADABLE_RESULT


# How a life that ended gives way to the next (--reset): a restore of the
# snapshot the first boot took once its executor was ready, or a new boot.
RESETS = ("snapshot", "reboot")


def reset_mode(name: str) -> "native.Reset":
    if name not in RESETS:
        raise SvmfuzzError(f"--reset: {name!r} is not one of {', '.join(RESETS)}")
    return native.Reset.SNAPSHOT if name == "snapshot" else native.Reset.REBOOT


def __getattr__(name: str):
    # The runner's configuration is the C++ one: RunnerConfig(vm, boot_timeout=,
    # op_timeout_ms=, program_timeout_ms=, cover=, cover_cap=, result_slack=,
    # reset=).
    if name == "RunnerConfig":
        return native.RunnerConfig
    raise AttributeError(name)


@dataclass
class Outcome:
    """What running one program gave."""
    id: int
    result: protocol.ExecResult | None  # None: the guest was lost before it answered
    life: "native.Life"
    lost: str = ""                      # why the guest was lost, if it was
    findings: list[Finding] = field(default_factory=list)  # the primary first
    seconds: float = 0.0

    def title(self) -> str:
        if self.findings:
            return self.findings[0].title
        return self.result.title()


class Runner:
    def __init__(self, cfg: "native.RunnerConfig", log=lambda msg: None) -> None:
        self._native = native.Runner(cfg, log)

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def cfg(self) -> "native.RunnerConfig":
        """The runner's own: a change applies from the next program (timeouts)
        or the next life (the VM)."""
        return self._native.config

    @property
    def lives(self) -> list["native.Life"]:
        return self._native.lives

    @property
    def life(self) -> "native.Life | None":
        return self._native.life

    @property
    def vm_pid(self) -> int | None:
        """QEMU's process of the current life."""
        return self._native.vm_pid

    @property
    def qmp_socket(self) -> Path | None:
        """The QEMU monitor of the current life (vm.qmp)."""
        return self._native.qmp_socket

    def boot(self) -> "native.Life":
        """Starts the next VM life and waits for its executor."""
        return self._native.boot()

    def run(self, program: bytes, knobs: protocol.Knobs | None = None) -> Outcome:
        """Runs one program (its binary form), booting a VM first if there is
        none. `knobs`: test-only driver knobs for the program's device files."""
        o = self._native.run(program, knobs.values() if knobs is not None else [])
        result, unreadable = verdict.decode(o.result)
        if unreadable is not None:
            # An executor that says what this side cannot read is out of step
            # with it: a finding, and the life ends.
            why = f"{UNREADABLE_RESULT}: {unreadable.report.splitlines()[0]}"
            self._native.end_life(why)
            return Outcome(o.id, None, o.life, why, [unreadable], o.seconds)
        findings = verdict.findings(result, o.console, int(o.lost_kind), o.lost, o.stale)
        ender = verdict.ends_life(findings, o.lost)
        if ender is not None:
            console = self._native.end_life_after_report(o, ender.title)
            findings = verdict.findings(result, console, 0, "", o.stale) or findings
        return Outcome(o.id, result, o.life, o.lost, findings, o.seconds)

    def ping(self) -> float:
        return self._native.ping()

    def end_life(self, why: str) -> None:
        """Ends the current life now; the next program restores or boots."""
        self._native.end_life(why)

    def devctl(self, index: int) -> "native.DevCtl":
        """Device `index`'s control channel in the current life."""
        return self._native.devctl(index)

    def close(self) -> None:
        """Powers the guest off (or kills it if it does not answer)."""
        self._native.close()


def encode_programs(paths: list[Path]) -> list[bytes]:
    """The binary form of text programs; SvmfuzzError names the file and
    line of the first one that is not a valid program."""
    out = []
    for path in paths:
        try:
            # As read, line ends included; a stray byte that is not UTF-8 is
            # the parser's to refuse, or a comment's.
            text = path.read_bytes().decode(errors="replace")
        except OSError as e:
            raise SvmfuzzError(f"{path}: cannot read it: {e.strerror}") from None
        out.append(_encode(str(path), text))
    return out


def encode_texts(texts: dict[str, str]) -> dict[str, bytes]:
    """The binary form of named programs given as text (indentation ignored)."""
    return {name: _encode(name, "".join(f"{line.strip()}\n" for line in text.strip().splitlines()))
            for name, text in texts.items()}


def _encode(name: str, text: str) -> bytes:
    try:
        return native.encode_program(text)
    except ValueError as e:
        # "NAME:line:col: message", as a compiler names a place.
        raise SvmfuzzError(f"{name}:{e}") from None


def describe(outcome: Outcome) -> list[str]:
    """Lines for a person: the outcome, then one per op that ran."""
    restored = ", restored" if outcome.life.restored else ""
    lines = [f"program {outcome.id}: {outcome.title()} ({outcome.seconds * 1000:.1f} ms, "
             f"life {outcome.life.index}{restored})"]
    r = outcome.result
    if r is None:
        lines += [f"  finding: {f.title}" for f in outcome.findings]
        lines.append(f"  console: {outcome.life.console_log}")
        return lines
    for i, op in enumerate(r.ops):
        if not op.flags & protocol.OpFlag.STARTED:
            continue
        name = protocol.op_name(op.code)
        flags = "|".join(f.name.lower() for f in protocol.OpFlag
                         if op.flags & f and f not in (protocol.OpFlag.STARTED,
                                                       protocol.OpFlag.DONE))
        lines.append(f"  {i:3d} @{op.thread} {name:<16} err={op.err:<3d} ret={op.ret:<8d} "
                     f"{op.duration_us:>8d} us {flags}".rstrip())
    for m in r.mismatches:
        where = "end of process" if m.op == protocol.END_OF_PROCESS else f"op {m.op}"
        lines.append(f"  MISMATCH after {where}: buf={m.buffer} page={m.page} "
                     f"byte={m.offset} expected {m.expected:#04x} found {m.actual:#04x}")
    lines.append(f"  coverage: {len(r.cover)} PCs, {len(r.remote_cover)} remote PCs")
    for f in outcome.findings:
        lines.append(f"  finding: {f.title}")
    return lines


def run_command(args, log) -> int:
    paths = [Path(p) for p in args.programs]
    programs = encode_programs(paths)
    cfg = native.RunnerConfig(config_from_args(args, "executor", log),
                              boot_timeout=args.timeout, op_timeout_ms=args.op_timeout_ms,
                              program_timeout_ms=args.program_timeout_ms,
                              reset=reset_mode(args.reset))
    failed = False
    with Runner(cfg, log) as runner:
        runner.boot()
        rtt = min(runner.ping() for _ in range(20))
        log(f"run: host<->executor round trip {rtt * 1000:.2f} ms (best of 20)")
        for path, program in zip(paths, programs):
            start = time.monotonic()
            outcomes = [runner.run(program) for _ in range(args.repeat)]
            seconds = time.monotonic() - start
            bad = [o for o in outcomes if o.findings or o.result.status != protocol.Status.OK]
            # The first run that was not ok says more than a clean last one.
            for line in describe(bad[0] if bad else outcomes[-1]):
                log(line)
            failed |= bool(bad)
            log(f"run: {path.name}: {args.repeat} run(s), {args.repeat / seconds:.1f} programs/s, "
                f"{len(bad)} not ok")
    return 1 if failed else 0


SMOKE_PROGRAM = REPO_ROOT / "corpus" / "programs" / "boot_smoke.svmp"
DEVICE_BOUND = re.compile(r"svmdev \S+: svmdev interface \d+\.\d+")


def boot_command(args, log) -> int:
    """Boots the guest to a ready executor, checks the driver bound every
    svmdev, and exercises the device once with the smoke program."""
    (program,) = encode_programs([SMOKE_PROGRAM])
    cfg = native.RunnerConfig(config_from_args(args, "executor", log), boot_timeout=args.timeout)
    with Runner(cfg, log) as runner:
        life = runner.boot()
        log(f"boot: executor ready in {life.boot_seconds:.1f} s ({cfg.vm.accel}, "
            f"{cfg.vm.cpus} vCPUs, {cfg.vm.memory}, {cfg.vm.devices} svmdev device(s))")
        rtt = min(runner.ping() for _ in range(20))
        log(f"boot: host<->executor round trip {rtt * 1000:.2f} ms (best of 20)")
        outcome = runner.run(program)
        for line in describe(outcome):
            log(line)
    bound = len(DEVICE_BOUND.findall(life.console_log.read_text(errors="replace")))
    log(f"boot: guest driver bound {bound} of {cfg.vm.devices} svmdev device(s)")
    failed_ops = [] if outcome.result is None else [
        op for op in outcome.result.ops if op.err or not op.flags & protocol.OpFlag.DONE]
    for f in outcome.findings:
        log(f"boot: finding: {f.title}")
    if bound != cfg.vm.devices or outcome.findings or outcome.result is None or failed_ops:
        log(f"boot: FAILED ({len(failed_ops)} smoke op(s) failed; console {life.console_log})")
        return 1
    log("boot: ok")
    return 0
