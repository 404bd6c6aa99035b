"""Running programs in the guest, VM life after VM life.

A Runner owns one VM at a time. It sends each program to the executor and
returns what came back; when the guest is lost (QEMU exits, the executor stops
answering or closes its port) or can no longer be trusted (the kernel reported
trouble, or a program left a task the kernel cannot kill), it ends that VM
life and boots the next one before the next program. Every life keeps its own
console log, named after the life, so the console of a crash is never
overwritten by the reboot that follows it.

Each program's outcome carries its findings (oracles/program.py): what the
kernel printed while it ran, what its result says, and what the devices
reported on their control channels.

A program's device actions (dev_access, fault_storm, delay_acks, drop_acks,
fail_dma) are the device's own doing: the executor asks the host with a
DEVICE message, and DeviceActions performs them through the device's control
channel while the runner waits for the program's result.
"""

import dataclasses
import subprocess
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from svmfuzz import devctl, protocol
from svmfuzz.errors import SvmfuzzError
from svmfuzz.oracles import console
from svmfuzz.oracles.console import Finding
from svmfuzz.oracles.program import DRIVER_CATEGORIES, judge
from svmfuzz.paths import REPO_ROOT
from svmfuzz.vm import Vm, VmConfig, config_from_args

# A killed program may take this long to die before the executor gives up on
# it (Supervisor::kKillGraceMs), and answering takes a little more.
EXECUTOR_KILL_GRACE = 5.0
# What the guest's init prints when the executor has gone; it then powers off.
EXECUTOR_EXITED = "svmfuzz-init: executor exited"


@dataclass
class RunnerConfig:
    vm: VmConfig
    boot_timeout: float = 300
    op_timeout_ms: int = 5000
    program_timeout_ms: int = 20000
    cover: bool = True
    cover_cap: int = 65536
    # Seconds past the program's own deadline before the guest counts as hung.
    result_slack: float = 30


@dataclass
class Life:
    """One boot of the VM."""
    index: int
    console_log: Path
    boot_seconds: float = 0.0
    programs: int = 0
    end: str = ""  # why it ended; "" while it runs or if it was shut down cleanly


@dataclass
class Outcome:
    """What running one program gave."""
    id: int
    result: protocol.ExecResult | None  # None: the guest was lost before it answered
    life: Life
    lost: str = ""                      # why the guest was lost, if it was
    findings: list[Finding] = field(default_factory=list)  # the primary first
    seconds: float = 0.0

    def title(self) -> str:
        if self.findings:
            return self.findings[0].title
        return self.result.title()


_OP = {name: code for code, name in enumerate(protocol.OP_NAMES)}
# Events the devices stream: the stale-access oracle's, and the end of a
# stalled device access. The device blocks while its channel is full, so
# nothing that arrives by the thousand (faults, invalidations) is asked for.
EVENTS = devctl.Evt.STALE | devctl.Evt.ACCESS_DONE
# delay_acks holds every invalidation of its window (the device holds at most
# 64 at a time and performs the rest at once).
ALL_INVALIDATIONS = 0xFFFFFFFF
# How often a wait on the device looks at the time (delay_acks releases).
_TICK = 0.05


class DeviceActions:
    """The devices of one VM life, acting as a program asks: each request is
    performed through the device's control channel and answered with its
    status. What a program sets up (held, dropped or early acknowledgements,
    failing DMA) ends with it."""

    def __init__(self, vm: Vm, access_timeout: float, log=lambda msg: None) -> None:
        self.ctls = [vm.devctl(i) for i in range(vm.cfg.devices)]
        for ctl in self.ctls:
            ctl.set_events(EVENTS)
        self.access_timeout = access_timeout
        self.log = log
        self._armed: set[int] = set()        # devices with an injection of this program
        self._release: dict[int, float] = {}  # device: when delay_acks ends
        self._delaying: set[int] = set()      # devices whose mode delay_acks set

    def perform(self, req: protocol.DeviceRequest) -> protocol.DeviceReply:
        unavailable = protocol.DeviceReply(req.seq, protocol.DEVICE_UNAVAILABLE)
        if req.device >= len(self.ctls):
            return unavailable
        ctl = self.ctls[req.device]
        op = protocol.op_name(req.op)
        try:
            if op == "dev_access":
                r = self._access(ctl, req)
            elif op == "fault_storm":
                # `arg1` accesses spread evenly over `arg0` pages.
                stride = max(req.arg0 * 4096 // max(req.arg1, 1), 1)
                r = ctl.fault_storm(req.ctx, req.va, stride, min(req.arg1, 0xFFFF),
                                    devctl.Kind.READ)
            elif op == "delay_acks":
                self._armed.add(req.device)
                self._delaying.add(req.device)
                r = ctl.inval_mode(devctl.InvalMode.DELAY, ALL_INVALIDATIONS)
                until = time.monotonic() + req.arg0 / 1e6
                self._release[req.device] = max(self._release.get(req.device, 0), until)
            elif op == "drop_acks":
                self._armed.add(req.device)
                self._delaying.discard(req.device)
                r = ctl.inval_mode(devctl.InvalMode.DROP, req.arg0)
            elif op == "fail_dma":
                self._armed.add(req.device)
                r = ctl.fail_dma(0, req.arg0)
            else:
                return unavailable
        except devctl.DevCtlError as e:
            self.log(f"runner: {op} on svm{req.device}: {e}")
            return unavailable
        return protocol.DeviceReply(req.seq, r.status, r.value)

    def _access(self, ctl: devctl.DevCtl, req: protocol.DeviceRequest) -> devctl.Result:
        """A word access; one that stalls is waited for until the driver
        replays or cancels it, or access_timeout passes (then STALLED)."""
        kind = devctl.Kind(req.arg0)
        r = ctl.access(req.ctx, req.va, kind, 8, 0 if kind == devctl.Kind.READ else 1)
        if r.status != devctl.Status.STALLED:
            return r
        tag = ctl.tag
        deadline = time.monotonic() + self.access_timeout
        while True:
            for e in ctl.events:
                if e.kind == devctl.Evt.ACCESS_DONE and e.tag == tag:
                    ctl.events.remove(e)
                    return devctl.Result(e.arg, e.code, 0)
            left = deadline - time.monotonic()
            if left <= 0:
                return r
            self.poll()
            ctl.poll_events(min(left, _TICK))

    def poll(self) -> float:
        """Ends the delays that are due; seconds until the next one."""
        now = time.monotonic()
        for device, until in list(self._release.items()):
            if until <= now:
                del self._release[device]
                self._end_delay(device)
        return min(self._release.values(), default=now + 3600) - now

    def _end_delay(self, device: int) -> None:
        ctl = self.ctls[device]
        if device in self._delaying:  # not since replaced by drop_acks
            self._delaying.discard(device)
            ctl.inval_mode(devctl.InvalMode.NORMAL, 0)
        ctl.release()

    def finish(self) -> list[devctl.Event]:
        """After a program: ends what it set up on the devices and returns the
        stale accesses they reported while it ran."""
        self._release.clear()
        self._delaying.clear()
        stale = []
        for i, ctl in enumerate(self.ctls):
            if i in self._armed:
                ctl.inval_mode(devctl.InvalMode.NORMAL, 0)
                ctl.fail_dma(0, 0)
                ctl.release()
            else:
                ctl.ping()  # after every event the device sent before now
            stale += [e for e in ctl.events if e.kind == devctl.Evt.STALE]
            ctl.events.clear()
        self._armed.clear()
        return stale


class Runner:
    def __init__(self, cfg: RunnerConfig, log=lambda msg: None) -> None:
        self.cfg = cfg
        self.log = log
        self.vm: Vm | None = None
        self.lives: list[Life] = []
        self._next_id = 1
        self._console_seen = 0
        self.devices: DeviceActions | None = None

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def life(self) -> Life | None:
        return self.lives[-1] if self.lives else None

    def boot(self) -> Life:
        """Starts the next VM life and waits for its executor."""
        self._end_life("replaced")
        index = len(self.lives)
        cfg = dataclasses.replace(self.cfg.vm, name=f"{self.cfg.vm.name}-life{index:03d}")
        vm = Vm(cfg)
        life = Life(index, vm.console_log)
        self.lives.append(life)
        self.vm = vm
        self._console_seen = 0
        vm.start()
        try:
            life.boot_seconds = vm.wait_ready(self.cfg.boot_timeout)
        except SvmfuzzError as e:
            self._end_life(f"boot failed: {str(e).splitlines()[0]}")
            raise
        # A stalled access waits no longer than an op may take.
        access_timeout = (self.cfg.op_timeout_ms or self.cfg.program_timeout_ms) / 1000
        try:
            self.devices = DeviceActions(vm, access_timeout, self.log)
        except (SvmfuzzError, devctl.DevCtlError, OSError) as e:
            self._end_life(f"device control channel: {str(e).splitlines()[0]}")
            raise SvmfuzzError(f"{cfg.name}: device control channel: {e}") from e
        self.log(f"runner: life {index} ready in {life.boot_seconds:.1f} s "
                 f"(features {self.vm.ready.features!r}); console {life.console_log}")
        return life

    def run(self, program: bytes, knobs: protocol.Knobs | None = None) -> Outcome:
        """Runs one program (its binary form), booting a VM first if there is
        none. `knobs`: test-only driver knobs for the program's device files."""
        if self.vm is None:
            self.boot()
        life = self.life
        request = protocol.ExecRequest(
            self._next_id, program, protocol.EXEC_COVER if self.cfg.cover else 0,
            self.cfg.op_timeout_ms, self.cfg.program_timeout_ms, self.cfg.cover_cap, knobs)
        self._next_id += 1
        timeout = (self.cfg.program_timeout_ms / 1000 + EXECUTOR_KILL_GRACE
                   + self.cfg.result_slack)
        start = time.monotonic()
        window_start = self._console_seen
        result, lost, kind, stale = None, "", "", []
        try:
            result = self.vm.execute(request, timeout, self.devices)
            stale = self.devices.finish()
        except TimeoutError:
            lost, kind = f"no result within {timeout:.0f} s", console.NO_OUTPUT
        except (SvmfuzzError, devctl.DevCtlError, OSError) as e:
            lost = str(e).splitlines()[0]
            kind = console.EXECUTOR_LOST if self.vm.alive() else console.VM_LOST
        life.programs += 1
        if lost:
            self._end_life(lost)
        window = self._read_console(window_start, whole=bool(lost))
        if lost and EXECUTOR_EXITED in window:
            kind = console.EXECUTOR_LOST  # the guest powered off because it had gone
        findings = judge(result, window, kind, lost, device_events=stale)
        kernel = [f for f in findings if f.category not in DRIVER_CATEGORIES]
        if not lost and kernel:
            self._end_life(f"kernel: {kernel[0].title}")
            # The rest of a report the kernel was still printing belongs to it.
            window = self._read_console(window_start, whole=True)
            findings = judge(result, window, device_events=stale)
        elif result is not None and result.status == protocol.Status.STUCK:
            self._end_life(f"program {request.id} left a task in state {chr(result.detail)}")
        return Outcome(request.id, result, life, lost, findings, time.monotonic() - start)

    def ping(self) -> float:
        if self.vm is None:
            self.boot()
        return self.vm.ping()

    def close(self) -> None:
        """Powers the guest off (or kills it if it does not answer)."""
        if self.vm is not None and self.vm.alive() and not self.life.end:
            try:
                self.vm.poweroff(30)
            except (SvmfuzzError, OSError, TimeoutError):
                pass
        self._end_life("")

    def _read_console(self, start: int, whole: bool) -> str:
        """This life's console from `start`: whole lines only while the life
        goes on (a line still being printed is the next program's), all of it
        once the life has ended."""
        try:
            with open(self.life.console_log, "rb") as f:
                f.seek(start)
                text = f.read()
        except OSError:
            return ""
        cut = len(text) if whole else text.rfind(b"\n") + 1
        self._console_seen = start + cut
        return text[:cut].decode(errors="replace")

    def _end_life(self, why: str) -> None:
        if self.vm is None:
            return
        # Let the console catch up with what the kernel printed while dying.
        if why and self.vm.alive():
            time.sleep(0.2)
        self.vm.kill()
        self.devices = None
        self.life.end = why
        if why:
            self.log(f"runner: life {self.life.index} ended after {self.life.programs} "
                     f"program(s): {why}")
        self.vm = None


def encode_programs(paths: list[Path], svmprog: Path) -> list[bytes]:
    """The binary form of text programs, by the svmprog tool of the build."""
    if not svmprog.is_file():
        raise SvmfuzzError(f"{svmprog} is missing: build it (cmake --build <build> --target svmprog)")
    with tempfile.TemporaryDirectory(prefix="svmfuzz-run-") as out:
        done = subprocess.run([str(svmprog), "encode", "-o", out, *map(str, paths)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SvmfuzzError(f"svmprog encode: {done.stderr.strip()}")
        return [(Path(out) / f"{p.stem}.bin").read_bytes() for p in paths]


def encode_texts(texts: dict[str, str], workdir: Path, svmprog: Path) -> dict[str, bytes]:
    """The binary form of named programs given as text (indentation ignored)."""
    paths = []
    for name, text in texts.items():
        paths.append(workdir / f"{name}.svmp")
        paths[-1].write_text("\n".join(line.strip() for line in text.strip().splitlines()) + "\n")
    return dict(zip(texts, encode_programs(paths, svmprog)))


def describe(outcome: Outcome) -> list[str]:
    """Lines for a person: the outcome, then one per op that ran."""
    lines = [f"program {outcome.id}: {outcome.title()} ({outcome.seconds * 1000:.1f} ms, "
             f"life {outcome.life.index})"]
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
    build = Path(args.build_dir)
    svmprog = build / "fuzz" / "program" / "svmprog"
    paths = [Path(p) for p in args.programs]
    programs = encode_programs(paths, svmprog)
    cfg = RunnerConfig(config_from_args(args, "executor", log), boot_timeout=args.timeout,
                       op_timeout_ms=args.op_timeout_ms,
                       program_timeout_ms=args.program_timeout_ms)
    failed = False
    with Runner(cfg, log) as runner:
        runner.boot()
        rtt = min(runner.ping() for _ in range(20))
        log(f"run: host<->executor round trip {rtt * 1000:.2f} ms (best of 20)")
        for path, program in zip(paths, programs):
            start = time.monotonic()
            outcomes = [runner.run(program) for _ in range(args.repeat)]
            seconds = time.monotonic() - start
            for line in describe(outcomes[-1]):
                log(line)
            bad = [o for o in outcomes if o.findings or o.result.status != protocol.Status.OK]
            failed |= bool(bad)
            log(f"run: {path.name}: {args.repeat} run(s), {args.repeat / seconds:.1f} programs/s, "
                f"{len(bad)} not ok")
    return 1 if failed else 0


SMOKE_PROGRAM = REPO_ROOT / "corpus" / "programs" / "boot_smoke.svmp"
DEVICE_BOUND = re.compile(r"svmdev \S+: svmdev interface \d+\.\d+")


def boot_command(args, log) -> int:
    """Boots the guest to a ready executor, checks the driver bound every
    svmdev, and exercises the device once with the smoke program."""
    build = Path(args.build_dir)
    (program,) = encode_programs([SMOKE_PROGRAM], build / "fuzz" / "program" / "svmprog")
    cfg = RunnerConfig(config_from_args(args, "executor", log), boot_timeout=args.timeout)
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
