"""QEMU with svmdev: Debian's qemu 7.2 source (or QEMU_SRC), the device glue
wired into its meson and Kconfig, the device core linked in.

Flavours: "release" for speed, "asan" (--enable-sanitizers, with the core
built under ASan+UBSan too) for campaigns that hunt device-model bugs.
"""

import filecmp
import os
import re
import shutil
import subprocess
from pathlib import Path

from svmfuzz.artifacts import cache
from svmfuzz.errors import SvmfuzzError
from svmfuzz.paths import REPO_ROOT, cache_root

DEVICE_DIR = REPO_ROOT / "qemu-device"
GLUE = DEVICE_DIR / "qemu" / "svmdev-pci.c"
# The device core's C ABI, and the headers shared with the driver and the host.
HEADER_DIRS = (DEVICE_DIR / "include" / "svmdev", REPO_ROOT / "include" / "svmdev")
RECIPE = "qemu-v1"
MARK = "# svmfuzz: svmdev"
TIMERS_MARK = "svmfuzz_timers_post_load"

CONFIGURE = ["--target-list=x86_64-softmmu", "--without-default-features", "--enable-tcg",
             "--enable-kvm", "--disable-docs", "--disable-werror", "--disable-install-blobs",
             "--cc=clang", "--cxx=clang++", "--host-cc=clang"]
FLAVOURS = {"release": [], "asan": ["--enable-sanitizers"]}

MESON_SNIPPET = f"""
{MARK}
softmmu_ss.add(when: 'CONFIG_SVMDEV', if_true: [
  files('svmdev/svmdev-pci.c'),
  declare_dependency(include_directories: include_directories('svmdev/include'),
                     link_args: [meson.project_build_root() / 'svmdev' / 'libsvmdev_core.a',
                                 '-lstdc++'])])
"""
KCONFIG_SNIPPET = f"""
{MARK}
config SVMDEV
    bool
    default y
    depends on PCI && MSI_NONBROKEN
"""

# Under TCG the guest's TSC is QEMU's tick counter, which QEMU keeps from
# going backwards. A loadvm of an older snapshot therefore leaves the TSC
# where the ended life had taken it while the rest of the guest (its memory,
# the HPET, the virtual clock) goes back: the restored kernel sees its
# sched_clock leap by the whole life and reports a soft lockup of an idle CPU
# (and RCU stalls) that no kernel code caused. KVM restores the TSC with the
# CPU state; this lets the loaded tick count stand, as KVM does.
TIMERS_POST_LOAD = f"""
static int {TIMERS_MARK}(void *opaque, int version_id)
{{
    TimersState *s = opaque;

    s->cpu_ticks_prev = 0;
    return 0;
}}

"""
TIMERS_DESC = re.compile(r'(static const VMStateDescription vmstate_timers = \{\n'
                         r'\s*\.name = "timer",\n)')


def debian_source(log) -> tuple[Path, str]:
    out = subprocess.run(["apt-cache", "showsrc", "--only-source", "qemu"],
                         capture_output=True, text=True)
    versions = re.findall(r"^Version: (\S+)", out.stdout, re.M)
    if not versions:
        raise SvmfuzzError("no source package for qemu: run scripts/install-deps.sh, "
                           "which adds the deb-src entry, or set QEMU_SRC")
    version = sorted(versions, key=_DebVersion)[-1]
    dest = cache_root() / "qemu" / "src" / f"debian-{version.replace(':', '_')}"
    tree = next(dest.glob("qemu-*/configure"), None) if dest.is_dir() else None
    if tree is None:
        log(f"qemu: fetching Debian's qemu {version} source")
        tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        cache.run(["apt-get", "source", "-qq", f"qemu={version}"], tmp / "fetch.log", cwd=tmp)
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(tmp, dest)
        tree = next(dest.glob("qemu-*/configure"))
    return tree.parent, f"debian-{version}"


class _DebVersion:
    """Orders Debian version strings the way dpkg does."""

    def __init__(self, v: str) -> None:
        self.v = v

    def __lt__(self, other: "_DebVersion") -> bool:
        return subprocess.run(["dpkg", "--compare-versions", self.v, "lt", other.v]).returncode == 0


def resolve_source(qemu_src: str | None, log) -> tuple[Path, str]:
    if qemu_src:
        path = Path(qemu_src).resolve()
        if not (path / "configure").is_file() or not (path / "hw" / "misc").is_dir():
            raise SvmfuzzError(f"QEMU_SRC={qemu_src}: not a QEMU source tree")
        return path, f"{path.name}-{cache.tree_fingerprint(path)}"
    return debian_source(log)


def _copy_if_changed(src: Path, dst: Path) -> bool:
    """Copy unless identical, so unchanged files keep their mtime for ninja."""
    if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return True


def _append_once(path: Path, snippet: str) -> None:
    text = path.read_text()
    if MARK not in text:
        path.write_text(text.rstrip("\n") + "\n" + snippet)


def restore_tsc_on_load(src: Path) -> None:
    """Make a loadvm take the guest's TSC back with the snapshot (see TIMERS_POST_LOAD)."""
    for rel in ("softmmu/cpu-timers.c", "system/cpu-timers.c"):
        path = src / rel
        if path.is_file():
            break
    else:
        raise SvmfuzzError(f"{src}: no softmmu/cpu-timers.c or system/cpu-timers.c; "
                           "this QEMU is not one svmfuzz knows how to build")
    text = path.read_text()
    if TIMERS_MARK in text:
        return
    m = TIMERS_DESC.search(text)
    if m is None:
        raise SvmfuzzError(f"{path}: no 'timer' VMStateDescription to give a post_load; "
                           "this QEMU is not one svmfuzz knows how to build")
    hook = f"    .post_load = {TIMERS_MARK},\n"
    path.write_text(text[:m.start()] + TIMERS_POST_LOAD + m.group(1) + hook + text[m.end():])


def wire_device(src: Path) -> None:
    """Add the glue and headers to hw/misc and register them with meson and Kconfig."""
    misc = src / "hw" / "misc"
    _copy_if_changed(GLUE, misc / "svmdev" / GLUE.name)
    for h in sorted(h for d in HEADER_DIRS for h in d.glob("*.h")):
        _copy_if_changed(h, misc / "svmdev" / "include" / "svmdev" / h.name)
    _append_once(misc / "meson.build", MESON_SNIPPET)
    _append_once(misc / "Kconfig", KCONFIG_SNIPPET)
    restore_tsc_on_load(src)


def build(flavour: str, core_lib: Path, qemu_src: str | None, log) -> Path:
    if flavour not in FLAVOURS:
        raise SvmfuzzError(f"unknown QEMU flavour {flavour!r}: choose from {', '.join(FLAVOURS)}")
    if not core_lib.is_file():
        raise SvmfuzzError(f"device core library {core_lib} is missing: build it with CMake first")
    src, src_id = resolve_source(qemu_src, log)
    args = CONFIGURE + FLAVOURS[flavour]
    clang = cache.tool_version("clang")
    bkey = cache.Hasher().text("src", src_id).text("args", " ".join(args)).text("cc", clang).key()
    bdir = cache_root() / "qemu" / "build" / f"{flavour}-{bkey[:12]}"
    h = (cache.Hasher().text("recipe", RECIPE).text("build", bkey).file("glue", GLUE)
         .text("timers", TIMERS_POST_LOAD).file("core", core_lib))
    for d in HEADER_DIRS:
        h.tree(f"headers {d.relative_to(REPO_ROOT)}", d)
    key = h.key()

    def fill(out: Path) -> dict:
        wire_device(src)
        bdir.mkdir(parents=True, exist_ok=True)
        log_file = bdir / "svmfuzz-build.log"
        log_file.write_text("")
        if not (bdir / "build.ninja").is_file():
            log(f"qemu: configuring {src_id} ({flavour}) in {bdir}")
            cache.run([src / "configure", *args], log_file, cwd=bdir)
        binary = bdir / "qemu-system-x86_64"
        # meson does not track a library given only as a link argument.
        if _copy_if_changed(core_lib, bdir / "svmdev" / "libsvmdev_core.a") and binary.exists():
            binary.unlink()
        log(f"qemu: building qemu-system-x86_64 ({flavour}; about 3 minutes on 2 cores "
            f"the first time; log: {log_file})")
        cache.run(["ninja", "-C", bdir, "qemu-system-x86_64"], log_file)
        shutil.copy2(binary, out / binary.name)
        return {"flavour": flavour, "source": src_id, "build_dir": str(bdir)}

    return cache.publish(f"qemu-{flavour}", key, fill, log)
