"""The guest's initramfs: busybox, the executor, hmm-tests, the modules
(test_hmm and our driver, debug info stripped) and an init that loads them.
extend() adds static binaries to one, for init's svmfuzz.run=extra:NAME.
"""

import subprocess
import tempfile
from pathlib import Path

from svmfuzz.artifacts import cache
from svmfuzz.artifacts.cpio import NewcWriter
from svmfuzz.errors import SvmfuzzError
from svmfuzz.paths import REPO_ROOT

BUSYBOX = Path("/bin/busybox")
INIT = REPO_ROOT / "guest-driver" / "initramfs" / "init"
RECIPE = "initramfs-v1"
DIRS = ["bin", "dev", "etc", "lib", "lib/modules", "proc", "root", "sys", "tmp"]


def _is_static(path: Path) -> bool:
    out = subprocess.run(["file", "-L", str(path)], capture_output=True, text=True).stdout
    return "statically linked" in out or "static-pie" in out


def _stripped(ko: Path) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        dst = Path(d) / ko.name
        subprocess.run(["objcopy", "--strip-debug", str(ko), str(dst)], check=True)
        return dst.read_bytes()


def build(kernel: Path, module: Path, executor: Path, log) -> Path:
    for what, path in (("busybox", BUSYBOX), ("executor", executor)):
        if not path.is_file():
            raise SvmfuzzError(f"{what} binary {path} is missing")
        if not _is_static(path):
            raise SvmfuzzError(f"{path} is not statically linked; the initramfs has no libraries "
                               "(busybox comes from the busybox-static package)")
    modules = sorted(kernel.glob("modules/*.ko")) + sorted(module.glob("*.ko"))
    binaries = {"busybox": BUSYBOX, "svmfuzz-executor": executor,
                "hmm-tests": kernel / "hmm-tests"}
    h = cache.Hasher().text("recipe", RECIPE).file("init", INIT)
    for name, path in binaries.items():
        h.file(name, path)
    for ko in modules:
        h.file(ko.name, ko)
    key = h.key()

    def fill(out: Path) -> dict:
        with open(out / "initramfs.cpio", "wb") as f:
            w = NewcWriter(f)
            for d in DIRS:
                w.directory(d)
            w.char_device("dev/console", 5, 1)
            w.char_device("dev/null", 1, 3, 0o666)
            w.file("init", INIT.read_bytes(), 0o755)
            for name, path in binaries.items():
                w.file(f"bin/{name}", path.read_bytes(), 0o755)
            w.symlink("bin/sh", "busybox")
            for ko in modules:
                w.file(f"lib/modules/{ko.name}", _stripped(ko))
            w.finish()
        return {"modules": [ko.name for ko in modules]}

    return cache.publish("initramfs", key, fill, log)


def extend(base: Path, binaries: dict[str, Path], out: Path) -> Path:
    """`base` with an archive appended that adds bin/NAME for each static
    binary (the kernel unpacks concatenated archives in order); the guest
    runs one with svmfuzz.run=extra:NAME,ARG,..."""
    for name, path in binaries.items():
        if not path.is_file() or not _is_static(path):
            raise SvmfuzzError(f"{path} (for bin/{name}) is not a statically linked binary")
    with open(out, "wb") as f:
        f.write(base.read_bytes())
        w = NewcWriter(f)
        for name, path in binaries.items():
            w.file(f"bin/{name}", path.read_bytes(), 0o755)
        w.finish()
    return out
