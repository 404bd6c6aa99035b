"""Running the guest: QEMU with svmdev devices, the kernel and initramfs the
build made, a console log per VM, the executor's virtio-serial port, and
each device's host control channel.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from svmfuzz import devctl, protocol
from svmfuzz.build import cache
from svmfuzz.errors import SvmfuzzError
from svmfuzz.paths import cache_root

FIRMWARE_DIRS = ["/usr/share/qemu", "/usr/share/seabios"]
EXECUTOR_PORT = "svmfuzz.exec"
KVM_PROBE_SECONDS = 30

@dataclass
class Artifacts:
    qemu: Path
    kernel: Path      # the kernel artifact directory (bzImage, vmlinux, ...)
    initramfs: Path

    @classmethod
    def from_build(cls, build: Path, flavour: str = "release") -> "Artifacts":
        found = {}
        for name in (f"qemu-{flavour}", "kernel", "initramfs"):
            d = cache.linked_artifact(name, build)
            if d is None:
                raise SvmfuzzError(f"no {name} artifact under {build}/artifacts: build first "
                                   f"(scripts/boot.sh, or cmake --build {build})")
            found[name] = d
        return cls(found[f"qemu-{flavour}"] / "qemu-system-x86_64", found["kernel"],
                   found["initramfs"] / "initramfs.cpio")

    def accel_key(self) -> str:
        """Whether KVM works depends on QEMU and the kernel, not on the initramfs."""
        return cache.Hasher().text("qemu", str(self.qemu.parent)).text("kernel", str(self.kernel)).key()


@dataclass
class VmConfig:
    artifacts: Artifacts
    workdir: Path
    name: str = "vm0"
    accel: str = "tcg"
    cpus: int = 2
    memory: str = "2G"
    devices: int = 1
    run: str = "executor"          # what the guest's init runs
    interactive: bool = False
    extra_append: list[str] = field(default_factory=list)


class Vm:
    """One QEMU process. Use as a context manager: it never outlives the block."""

    def __init__(self, cfg: VmConfig) -> None:
        self.cfg = cfg
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        self.console_log = cfg.workdir / f"{cfg.name}.console.log"
        self.stderr_log = cfg.workdir / f"{cfg.name}.qemu.log"
        # Unix socket paths are short; keep them out of a possibly deep workdir.
        self._sockdir = Path(tempfile.mkdtemp(prefix="svmfuzz-"))
        self.exec_sock = self._sockdir / "exec.sock"
        self.qmp_sock = self._sockdir / "qmp.sock"
        self.ctl_socks = [self._sockdir / f"ctl{i}.sock" for i in range(cfg.devices)]
        self._ctls: dict[int, devctl.DevCtl] = {}
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self._conn: socket.socket | None = None
        self._reader = protocol.FrameReader()
        self.ready: protocol.Ready | None = None

    def argv(self) -> list[str]:
        c = self.cfg
        append = ["console=ttyS0", "panic=-1", "printk.devkmsg=on", f"svmfuzz.run={c.run}",
                  *c.extra_append]
        if c.interactive:
            console = ["-chardev", f"stdio,id=con,signal=off,logfile={self.console_log}"]
        else:
            console = ["-chardev", f"file,id=con,path={self.console_log}"]
        argv = [str(c.artifacts.qemu), "-M", "q35", "-accel", c.accel, "-smp", str(c.cpus),
                "-m", c.memory, "-nodefaults", "-display", "none", "-no-reboot", "-nic", "none",
                *[a for d in FIRMWARE_DIRS for a in ("-L", d)],
                *console, "-serial", "chardev:con",
                "-kernel", str(c.artifacts.kernel / "bzImage"),
                "-initrd", str(c.artifacts.initramfs),
                "-append", " ".join(append),
                "-device", "virtio-serial-pci,id=vser0",
                "-chardev", f"socket,id=exec,path={self.exec_sock},server=on,wait=off",
                "-device", f"virtserialport,bus=vser0.0,chardev=exec,name={EXECUTOR_PORT}",
                "-qmp", f"unix:{self.qmp_sock},server=on,wait=off"]
        if c.accel == "kvm":
            argv += ["-cpu", "host"]
        for i, sock in enumerate(self.ctl_socks):
            argv += ["-chardev", f"socket,id=ctl{i},path={sock},server=on,wait=off",
                     "-device", f"svmdev,id=svm{i},chardev=ctl{i}"]
        return argv

    def __enter__(self) -> "Vm":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    def start(self) -> None:
        if not self.cfg.artifacts.qemu.is_file():
            raise SvmfuzzError(f"QEMU binary {self.cfg.artifacts.qemu} is missing")
        self.console_log.write_bytes(b"")
        with open(self.stderr_log, "wb") as err:
            stdio = None if self.cfg.interactive else subprocess.DEVNULL
            self.started = time.monotonic()
            self.proc = subprocess.Popen(self.argv(), stdin=stdio, stdout=stdio, stderr=err)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _died(self, what: str) -> SvmfuzzError:
        # A closed port usually means QEMU is exiting: give it a moment to say how.
        rc = self.wait_exit(2)
        who = f"QEMU exited ({rc})" if rc is not None else "the guest"
        err = self.stderr_log.read_text(errors="replace").strip()
        tail = "\n".join(self.console_log.read_text(errors="replace").splitlines()[-25:])
        return SvmfuzzError(f"{self.cfg.name}: {who} {what}\n"
                            f"QEMU said: {err or '(nothing)'}\nconsole tail:\n{tail}")

    def _connect(self, deadline: float) -> socket.socket:
        while self._conn is None:
            if not self.alive():
                raise self._died("before the executor port opened")
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(self.exec_sock))
                self._conn = s
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if time.monotonic() > deadline:
                    raise SvmfuzzError(f"{self.cfg.name}: executor port never appeared")
                time.sleep(0.05)
        return self._conn

    def receive(self, timeout: float) -> tuple:
        """The executor's next frame, (Msg, payload). TimeoutError if none in time."""
        deadline = time.monotonic() + timeout
        conn = self._connect(deadline)
        while (got := self._reader.next()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            conn.settimeout(min(left, 0.5))
            try:
                chunk = conn.recv(1 << 16)
            except socket.timeout:
                if not self.alive():
                    raise self._died("while the host waited for the executor")
                continue
            except ConnectionError:
                # QEMU aborting drops the port with a reset rather than EOF.
                chunk = b""
            if not chunk:
                raise self._died("and closed the executor port")
            self._reader.feed(chunk)
        return got

    def send(self, msg: protocol.Msg, payload: bytes = b"") -> None:
        self._connect(time.monotonic() + 5).sendall(protocol.frame(msg, payload))

    def _expect(self, want: protocol.Msg, timeout: float) -> bytes:
        kind, payload = self.receive(timeout)
        if kind != want:
            detail = f" ({payload.decode(errors='replace')})" if kind == protocol.Msg.ERROR else ""
            raise SvmfuzzError(f"{self.cfg.name}: executor sent {kind!r}{detail} "
                               f"instead of {want.name}")
        return payload

    def wait_ready(self, timeout: float) -> float:
        """Seconds from QEMU start to the executor's READY."""
        try:
            payload = self._expect(protocol.Msg.READY, timeout)
        except TimeoutError:
            tail = "\n".join(self.console_log.read_text(errors="replace").splitlines()[-25:])
            raise SvmfuzzError(f"{self.cfg.name}: no executor after {timeout:.0f} s "
                               f"(accel {self.cfg.accel}); console tail:\n{tail}") from None
        self.ready = protocol.Ready.decode(payload)
        if self.ready.version != protocol.VERSION:
            raise SvmfuzzError(f"{self.cfg.name}: executor speaks protocol {self.ready.version}, "
                               f"the host {protocol.VERSION}: rebuild the initramfs")
        return self.elapsed()

    def ping(self) -> float:
        t = time.monotonic()
        token = os.urandom(8)
        self.send(protocol.Msg.PING, token)
        if self._expect(protocol.Msg.PONG, 10) != token:
            raise SvmfuzzError(f"{self.cfg.name}: executor echoed the wrong PING payload")
        return time.monotonic() - t

    def devctl(self, index: int, timeout: float = 10) -> devctl.DevCtl:
        """A connected client of device `index`'s control channel (svm<index>),
        the same one on every call: the channel takes one client at a time."""
        if index in self._ctls:
            return self._ctls[index]
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise self._died("before its control channel opened")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(self.ctl_socks[index]))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if time.monotonic() > deadline:
                    raise SvmfuzzError(f"{self.cfg.name}: control channel of svm{index} "
                                       f"never appeared")
                time.sleep(0.05)
        self._ctls[index] = devctl.DevCtl(s)
        return self._ctls[index]

    def execute(self, request: protocol.ExecRequest, timeout: float,
                device=None) -> protocol.ExecResult:
        """Runs one program; TimeoutError if no result within `timeout` seconds.
        `device` performs the program's DEVICE requests meanwhile: perform(
        DeviceRequest) -> DeviceReply, and poll() -> seconds until it has
        timed work to do (run each time it is due)."""
        self.send(protocol.Msg.EXEC, request.encode())
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            wait = left if device is None else min(left, device.poll())
            try:
                kind, payload = self.receive(max(wait, 0))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise
                continue
            if kind != protocol.Msg.DEVICE:
                break
            asked = protocol.DeviceRequest.decode(payload)
            reply = (device.perform(asked) if device is not None
                     else protocol.DeviceReply(asked.seq, protocol.DEVICE_UNAVAILABLE))
            self.send(protocol.Msg.DEVICE_REPLY, reply.encode())
        if kind != protocol.Msg.RESULT:
            detail = f" ({payload.decode(errors='replace')})" if kind == protocol.Msg.ERROR else ""
            raise SvmfuzzError(f"{self.cfg.name}: executor sent {kind!r}{detail} "
                               f"instead of RESULT")
        result = protocol.ExecResult.decode(payload)
        if result.id != request.id:
            raise SvmfuzzError(f"{self.cfg.name}: result for program {result.id}, "
                               f"expected {request.id}")
        return result

    def qmp(self, command: str, **arguments) -> object:
        """Runs one QEMU monitor (QMP) command and returns what it returned,
        e.g. qmp("send-key", keys=[...]) to press keys on the guest's keyboard."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.qmp_sock))
            f = s.makefile("rwb")
            f.readline()  # the greeting
            for request in ({"execute": "qmp_capabilities"},
                            {"execute": command, "arguments": arguments}):
                f.write(json.dumps(request).encode() + b"\n")
                f.flush()
                while True:
                    line = f.readline()
                    if not line:
                        raise SvmfuzzError(f"{self.cfg.name}: QEMU closed its monitor")
                    reply = json.loads(line)
                    if "error" in reply:
                        raise SvmfuzzError(f"{self.cfg.name}: QMP {command}: "
                                           f"{reply['error'].get('desc', reply['error'])}")
                    if "return" in reply:  # anything else is an event
                        break
            return reply["return"]

    def poweroff(self, timeout: float = 60) -> None:
        self.send(protocol.Msg.POWEROFF)
        self.wait_exit(timeout)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        for ctl in self._ctls.values():
            ctl.sock.close()
        self._ctls.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self._sockdir, ignore_errors=True)

    def console(self) -> str:
        return self.console_log.read_text(errors="replace")


def choose_accel(requested: str, artifacts: Artifacts, workdir: Path, log) -> str:
    """TCG unless KVM is asked for, or a short probe boot shows it works."""
    if requested != "auto":
        return requested
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        log("accel: tcg (no usable /dev/kvm)")
        return "tcg"
    record = cache_root() / "kvm-probe.json"
    key = artifacts.accel_key()
    try:
        known = json.loads(record.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        accel = known[key]
        log(f"accel: {accel} (an earlier KVM probe with these artifacts "
            f"{'succeeded' if accel == 'kvm' else 'failed'})")
        return accel
    log(f"accel: probing KVM (a boot within {KVM_PROBE_SECONDS} s)")
    cfg = VmConfig(artifacts, workdir, name="kvm-probe", accel="kvm", devices=1)
    accel = "tcg"
    try:
        with Vm(cfg) as vm:
            vm.wait_ready(KVM_PROBE_SECONDS)
            accel = "kvm"
    except SvmfuzzError as e:
        log(f"accel: KVM probe failed ({str(e).splitlines()[0]})")
    known[key] = accel
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(known, indent=2))
    os.replace(tmp, record)
    log(f"accel: {accel}")
    return accel


def config_from_args(args, run: str, log) -> VmConfig:
    build = Path(args.build_dir)
    artifacts = Artifacts.from_build(build, args.qemu_flavour)
    workdir = Path(args.workdir) if args.workdir else build / "vm"
    accel = choose_accel(args.accel, artifacts, workdir, log)
    return VmConfig(artifacts, workdir, accel=accel, cpus=args.cpus, memory=args.memory,
                    devices=args.devices, run=run, extra_append=args.append.split())


def shell_command(args, log) -> int:
    cfg = config_from_args(args, "shell", log)
    cfg.interactive = True
    log(f"boot: interactive console ({cfg.accel}); the guest powers off when the shell exits")
    with Vm(cfg) as vm:
        vm.wait_exit(None)
    return 0
