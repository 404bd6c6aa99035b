"""Running the guest: the kernel and initramfs the build made and the QEMU
to run them with, the choice of accelerator, the QEMU monitor and the
interactive shell. The QEMU process itself (its command line, console log,
the executor's port and each device's control channel) is the C++ runner's
native.Vm (fuzz/runner/vm.h).
"""

import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from svmfuzz import native
from svmfuzz.artifacts import cache
from svmfuzz.errors import SvmfuzzError
from svmfuzz.paths import cache_root

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

    @classmethod
    def for_kernel(cls, build: Path, flavour: str, tree: str | None, profile: str,
                   log) -> "Artifacts":
        """The build's QEMU with the kernel of `tree` (None: the build's own
        source) in `profile`, and its driver and initramfs with the build's
        executor, each built through the cache if need be."""
        base = cls.from_build(build, flavour)
        if tree is None and profile == "debug":
            return base
        from svmfuzz.artifacts import image, kernel, module

        if tree is None:
            tree = kernel.tree_of(base.kernel)
        k = kernel.build(tree, log, profile=profile)
        m = module.build(k, log)
        i = image.build(k, m, build / "fuzz" / "executor" / "svmfuzz-executor", log)
        return cls(base.qemu, k, i / "initramfs.cpio")

    def accel_key(self) -> str:
        """Whether KVM works depends on QEMU and the kernel, not on the initramfs."""
        return cache.Hasher().text("qemu", str(self.qemu.parent)).text("kernel", str(self.kernel)).key()


def config(artifacts: Artifacts, workdir: Path, **fields) -> "native.VmConfig":
    """A VM of these artifacts; `fields` as native.VmConfig takes them (name,
    accel, cpus, memory, devices, vram, run, interactive, extra_append)."""
    return native.VmConfig(artifacts.qemu, artifacts.kernel, artifacts.initramfs, workdir, **fields)


def qmp(socket_path: Path, command: str, **arguments) -> object:
    """Runs one QEMU monitor (QMP) command on the VM whose monitor socket this
    is (its qmp_socket) and returns what it returned, e.g. qmp(path,
    "send-key", keys=[...]) to press keys on the guest's keyboard."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(socket_path))
        f = s.makefile("rwb")
        f.readline()  # the greeting
        for request in ({"execute": "qmp_capabilities"},
                        {"execute": command, "arguments": arguments}):
            f.write(json.dumps(request).encode() + b"\n")
            f.flush()
            while True:
                line = f.readline()
                if not line:
                    raise SvmfuzzError("QEMU closed its monitor")
                reply = json.loads(line)
                if "error" in reply:
                    raise SvmfuzzError(f"QMP {command}: "
                                       f"{reply['error'].get('desc', reply['error'])}")
                if "return" in reply:  # anything else is an event
                    break
        return reply["return"]


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
    cfg = config(artifacts, workdir, name="kvm-probe", accel="kvm", devices=1)
    accel = "tcg"
    try:
        with native.Vm(cfg) as vm:
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


def config_from_args(args, run: str, log) -> "native.VmConfig":
    build = Path(args.build_dir)
    artifacts = Artifacts.for_kernel(build, args.qemu_flavour, None, args.kernel_profile, log)
    workdir = Path(args.workdir) if args.workdir else build / "vm"
    accel = choose_accel(args.accel, artifacts, workdir, log)
    return config(artifacts, workdir, accel=accel, cpus=args.cpus, memory=args.memory,
                  devices=args.devices, vram=vram_size(args.vram), run=run,
                  extra_append=args.append.split())


def vram_size(text: str) -> str:
    """--vram as QEMU's svmdev takes it: bytes, or a count of K, M or G, a
    whole number of 4 KiB pages; empty for the device's default."""
    if not text:
        return ""
    m = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    size = int(m[1]) << {"": 0, "K": 10, "M": 20, "G": 30}[m[2]] if m else 0
    if size == 0 or size % 4096:
        raise SvmfuzzError(f"--vram {text!r}: want a non-zero multiple of 4 KiB, such as 64M")
    return f"{m[1]}{m[2]}"


def shell_command(args, log) -> int:
    cfg = config_from_args(args, "shell", log)
    cfg.interactive = True
    log(f"boot: interactive console ({cfg.accel}); the guest powers off when the shell exits")
    with native.Vm(cfg) as vm:
        vm.wait_exit(None)
    return 0
