"""The guest driver module, built against a kernel artifact's build tree.

Kbuild of this kernel writes objects beside the sources, so the driver and the
shared headers are copied into a scratch directory in the cache first, laid out
as in the repository (guest-driver/ beside include/svmdev/), so that the same
Kbuild serves `make -C <kernel build> M=$PWD/guest-driver` by hand.
"""

import json
import os
import shutil
from pathlib import Path

from svmfuzz.artifacts import cache
from svmfuzz.errors import SvmfuzzError
from svmfuzz.paths import REPO_ROOT, cache_root

DRIVER_DIR = REPO_ROOT / "guest-driver"
HEADERS = REPO_ROOT / "include" / "svmdev"
RECIPE = "module-v2"


def _driver_files() -> list[Path]:
    """Kbuild and the C sources and headers, relative to DRIVER_DIR.
    tests/ holds user-space programs: editing one does not rebuild the module."""
    return sorted(p.relative_to(DRIVER_DIR) for p in DRIVER_DIR.rglob("*")
                  if p.is_file() and (p.suffix in (".c", ".h") or p.name == "Kbuild")
                  and p.relative_to(DRIVER_DIR).parts[0] != "tests")


def work_root(key: str) -> Path:
    """Where the module of cache key `key` is built: it stands for the repository's root."""
    return cache_root() / "module" / "work" / key


def build(kernel: Path, log) -> Path:
    meta = json.loads((kernel / cache.STAMP).read_text())
    kbuild = Path(meta["build_dir"])
    if not (kbuild / "Module.symvers").is_file():
        raise SvmfuzzError(f"kernel build tree {kbuild} is gone: rebuild the kernel")
    h = cache.Hasher().text("recipe", RECIPE).text("kernel", meta["key"])
    for f in _driver_files():
        h.file(str(f), DRIVER_DIR / f)
    key = h.tree("headers", HEADERS).key()

    def fill(out: Path) -> dict:
        root = work_root(key)
        shutil.rmtree(root, ignore_errors=True)
        work = root / DRIVER_DIR.name
        for f in _driver_files():
            (work / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(DRIVER_DIR / f, work / f)
        shutil.copytree(HEADERS, root / HEADERS.relative_to(REPO_ROOT))
        log_file = out / "build.log"
        log(f"module: building the guest driver against {meta['release']}")
        cache.run(["make", "-C", kbuild, f"M={work}", f"-j{os.cpu_count()}", "modules"],
                  log_file)
        kos = sorted(work.glob("*.ko"))
        if not kos:
            raise SvmfuzzError(f"module build in {work} produced no .ko")
        for ko in kos:
            shutil.copy2(ko, out / ko.name)
        shutil.rmtree(root)
        return {"modules": [k.name for k in kos], "kernel": meta["key"]}

    return cache.publish("module", key, fill, log)
