"""Guest kernel: Debian's linux-source-6.12 (or KERNEL_SRC), configured for
svmfuzz, built once per source and config; plus the static hmm-tests selftest
from the same tree.

The kernel build directory is kept per source tree, compiler and profile, so a
change of config or source rebuilds incrementally; the published artifact is
keyed by everything that went into it.

Profiles: "debug" (KASAN, lockdep, KCOV over the whole kernel with comparison
operands, what tests and triage run) and "fuzz" (the same, but KCOV only in
mm/ and the driver, and no comparison operands, which no engine reads): the
coverage campaigns steer by is where the SVM code is, at a lower cost per
program.
"""

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from svmfuzz.artifacts import cache
from svmfuzz.errors import SvmfuzzError
from svmfuzz.paths import REPO_ROOT, cache_root

DEBIAN_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
FRAGMENT = REPO_ROOT / "guest-driver" / "kernel.config"
SELFTEST_ALARM = REPO_ROOT / "guest-driver" / "tests" / "hmm_tests_alarm.c"
RECIPE = "kernel-v2"
# Each profile's config on top of guest-driver/kernel.config, and the source
# folders it instruments for KCOV when the whole kernel is not.
PROFILES = {
    "debug": ("", ()),
    "fuzz": ("CONFIG_KCOV_INSTRUMENT_ALL=n\nCONFIG_KCOV_ENABLE_COMPARISONS=n\n", ("mm",)),
}
KCOV_MARK = "# svmfuzz: KCOV for the fuzz profile"


@dataclass
class KernelSource:
    path: Path
    name: str         # names the build directory
    fingerprint: str  # changes whenever the source does


# Other Debian kernel sources a kernel may be named by (--kernel debian-6.1):
# unpacked once into the cache and built as a tree.
DEBIAN_SOURCES = {"debian-6.1": ("linux-source-6.1", Path("/usr/src/linux-source-6.1.tar.xz"))}


def unpack_debian(name: str, log) -> Path:
    """The cache's unpacked tree of a Debian kernel source package."""
    package, tarball = DEBIAN_SOURCES[name]
    if not tarball.is_file():
        raise SvmfuzzError(f"{name}: {tarball} is missing: install the Debian package {package}")
    dest = cache_root() / "kernel" / "src" / f"deb-{name.split('-', 1)[1]}-" \
        f"{cache.file_digest(tarball)[:16]}"
    if not (dest / "Makefile").is_file():
        log(f"kernel: extracting {tarball}")
        tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        cache.run(["tar", "-xf", tarball, "-C", tmp, "--strip-components=1"])
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(tmp, dest)
    return dest


def resolve_source(kernel_src: str | None, log) -> KernelSource:
    if kernel_src in DEBIAN_SOURCES:
        kernel_src = str(unpack_debian(kernel_src, log))
    if kernel_src:
        path = Path(kernel_src).resolve()
        if not (path / "Makefile").is_file() or not (path / "mm").is_dir():
            raise SvmfuzzError(f"KERNEL_SRC={kernel_src}: not a Linux kernel tree")
        ident = cache.Hasher().text("path", str(path)).key()[:8]
        return KernelSource(path, f"{path.name}-{ident}", cache.tree_fingerprint(path))
    if not DEBIAN_TARBALL.is_file():
        raise SvmfuzzError(f"{DEBIAN_TARBALL} is missing: run scripts/install-deps.sh "
                           "(package linux-source-6.12) or set KERNEL_SRC")
    digest = cache.file_digest(DEBIAN_TARBALL)[:16]
    dest = cache_root() / "kernel" / "src" / f"deb-6.12-{digest}"
    if not (dest / "Makefile").is_file():
        log(f"kernel: extracting {DEBIAN_TARBALL}")
        tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        cache.run(["tar", "-xf", DEBIAN_TARBALL, "-C", tmp])
        (inner,) = list(tmp.iterdir())
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(inner, dest)
        shutil.rmtree(tmp)
    return KernelSource(dest, f"deb-6.12-{digest}", digest)


def tree_of(kernel_dir: Path) -> str | None:
    """The source a kernel artifact was built from, as build() takes it:
    None for Debian's linux-source-6.12."""
    import json

    try:
        source = Path(json.loads((kernel_dir / cache.STAMP).read_text())["source"])
    except (OSError, ValueError, KeyError) as e:
        raise SvmfuzzError(f"{kernel_dir}: no kernel source recorded ({e})") from e
    default = source.parent == cache_root() / "kernel" / "src" and source.name.startswith("deb-6.12-")
    return None if default else str(source)


def kernel_release(src: Path) -> str:
    fields = {}
    for line in (src / "Makefile").read_text().splitlines()[:10]:
        k, _, v = line.partition("=")
        fields[k.strip()] = v.strip()
    return f"{fields.get('VERSION')}.{fields.get('PATCHLEVEL')}.{fields.get('SUBLEVEL')}"


def parse_fragment(text: str) -> dict[str, str]:
    """CONFIG_X=v lines of a config fragment; v is 'n' for options asked off."""
    wanted = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("CONFIG_") and "=" in line:
            k, v = line.split("=", 1)
            wanted[k] = v
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            wanted[line[2:-len(" is not set")]] = "n"
    return wanted


def missing_options(wanted: dict[str, str], config_text: str) -> list[str]:
    """The options of `wanted` that the final .config does not honour."""
    have = {}
    for line in config_text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            k, v = line.split("=", 1)
            have[k] = v
    missing = []
    for k, v in wanted.items():
        got = have.get(k)
        if v == "n":
            if got not in (None, "n"):
                missing.append(f"{k}=n (got {got})")
        elif got != v:
            missing.append(f"{k}={v} (got {'not set' if got is None else got})")
    return missing


@contextlib.contextmanager
def instrumented(src: Path, folders: tuple[str, ...]):
    """KCOV for `folders` of `src` while the build runs, even when
    CONFIG_KCOV_INSTRUMENT_ALL is off. A no-op for a kernel that instruments
    everything: a folder's setting only stands in for the global one, and a
    file's own (mm/ keeps some out) wins. Each Makefile is put back as it was,
    its mtime too: the tree may be the user's, whose fingerprint is the cache
    key. A build killed before that leaves the mark, which the next one removes."""
    kept = []
    try:
        for folder in folders:
            makefile = src / folder / "Makefile"
            st = makefile.stat()
            text = makefile.read_text().replace(f"{KCOV_MARK}\nKCOV_INSTRUMENT := y\n", "")
            kept.append((makefile, text, st))
            makefile.write_text(f"{KCOV_MARK}\nKCOV_INSTRUMENT := y\n{text}")
        yield
    finally:
        for makefile, text, st in kept:
            makefile.write_text(text)
            os.utime(makefile, ns=(st.st_atime_ns, st.st_mtime_ns))


def configure(src: Path, bdir: Path, make: list[str], log_file: Path, log,
              profile: str = "debug") -> None:
    fragment = FRAGMENT.read_text() + PROFILES[profile][0]
    base = src / "kernel" / "configs" / "kvm_guest.config"
    stamp = bdir / "svmfuzz-config.key"
    key = cache.Hasher().text("fragment", fragment).file("kvm_guest", base).key()
    if stamp.is_file() and stamp.read_text() == key and (bdir / ".config").is_file():
        return
    log("kernel: configuring defconfig + kvm_guest.config + guest-driver/kernel.config"
        + ("" if profile == "debug" else f" + the {profile} profile"))
    cache.run([*make, "defconfig"], log_file)
    merged = bdir / "svmfuzz-fragment.config"
    merged.write_text(base.read_text() + "\n" + fragment)
    cache.run([src / "scripts" / "kconfig" / "merge_config.sh", "-m", "-O", bdir,
               bdir / ".config", merged], log_file)
    cache.run([*make, "olddefconfig"], log_file)
    missing = missing_options(parse_fragment(fragment), (bdir / ".config").read_text())
    if missing:
        raise SvmfuzzError("kernel config: options asked for in guest-driver/kernel.config "
                           "are not set after olddefconfig:\n  " + "\n  ".join(missing))
    stamp.write_text(key)


def build(kernel_src: str | None, log, jobs: int | None = None, profile: str = "debug") -> Path:
    if profile not in PROFILES:
        raise SvmfuzzError(f"unknown kernel profile {profile!r}: choose from "
                           f"{', '.join(PROFILES)}")
    src = resolve_source(kernel_src, log)
    gcc = cache.tool_version("gcc")
    suffix = "" if profile == "debug" else f"-{profile}"
    bdir = cache_root() / "kernel" / "build" / \
        f"{src.name}{suffix}-{cache.Hasher().text('cc', gcc).key()[:8]}"
    h = (cache.Hasher().text("recipe", RECIPE).text("source", src.fingerprint)
         .file("fragment", FRAGMENT).file("alarm", SELFTEST_ALARM).text("cc", gcc))
    if profile != "debug":
        # The debug key stays what it was: its builds are reused as they are.
        config, folders = PROFILES[profile]
        h.text("profile", profile).text("profile config", config).text("kcov", " ".join(folders))
    key = h.key()

    def fill(out: Path) -> dict:
        bdir.mkdir(parents=True, exist_ok=True)
        log_file = bdir / "svmfuzz-build.log"
        log_file.write_text("")
        make = ["make", "-C", src.path, f"O={bdir}", f"-j{jobs or os.cpu_count()}"]
        if (src.path / ".config").exists():
            raise SvmfuzzError(f"{src.path} has been configured in-tree; "
                               "svmfuzz builds out of tree: run 'make mrproper' there first")
        with instrumented(src.path, PROFILES[profile][1]):
            configure(src.path, bdir, make, log_file, log, profile)
            log(f"kernel: building {kernel_release(src.path)} ({profile}) in {bdir} "
                f"(about 12 minutes on 2 cores the first time; log: {log_file})")
            cache.run([*make, "bzImage", "modules"], log_file)
        for name in ("arch/x86/boot/bzImage", "vmlinux", "System.map", ".config"):
            shutil.copy2(bdir / name, out / Path(name).name)
        mods = out / "modules"
        mods.mkdir()
        shutil.copy2(bdir / "lib" / "test_hmm.ko", mods)
        log("kernel: building the static hmm-tests selftest")
        # Compiled from its own folder so assertion messages name hmm-tests.c, not a path.
        # The folder is selftests/mm since 6.3, selftests/vm before.
        selftests = src.path / "tools" / "testing" / "selftests"
        folder = next((d for d in (selftests / "mm", selftests / "vm")
                       if (d / "hmm-tests.c").is_file()), None)
        if folder is None:
            raise SvmfuzzError(f"{src.path} has no hmm-tests selftest")
        cache.run(["gcc", "-static", "-O2", "-pthread", f"-I{src.path}", f"-I{selftests}",
                   "-Wl,--wrap=alarm", "hmm-tests.c", SELFTEST_ALARM, "-o", out / "hmm-tests"],
                  log_file, cwd=folder)
        return {"release": kernel_release(src.path), "source": str(src.path),
                "build_dir": str(bdir), "compiler": gcc, "profile": profile}

    return cache.publish("kernel", key, fill, log)
