"""Content-addressed artifact cache.

An artifact is a directory under <cache>/<kind>/out/<key>, where key hashes
every input that can change the result. A build writes into a temporary
sibling and renames it into place, so a kill at any moment leaves either the
old state or the complete new artifact, never a half-written one.
"""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

from svmfuzz.paths import cache_root, artifacts_dir

STAMP = "svmfuzz-artifact.json"


class Hasher:
    """Accumulates named inputs into one key."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def text(self, name: str, value: str) -> "Hasher":
        self._h.update(f"{name}\0{len(value)}\0{value}\0".encode())
        return self

    def file(self, name: str, path: Path) -> "Hasher":
        return self.text(name, file_digest(path))

    def tree(self, name: str, root: Path, pattern: str = "*") -> "Hasher":
        for p in sorted(root.rglob(pattern)):
            if p.is_file() and "__pycache__" not in p.parts:
                self.file(f"{name}/{p.relative_to(root)}", p)
        return self

    def key(self) -> str:
        return self._h.hexdigest()[:20]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tool_version(*argv: str) -> str:
    """First line of a tool's --version: compilers are inputs too."""
    out = subprocess.run([*argv, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0]


def tree_fingerprint(root: Path) -> str:
    """Cheap identity of a user-supplied source tree.

    A git tree is named by its HEAD and uncommitted changes; anything else by
    the path, size and mtime of every file, which is enough to notice an edit.
    """
    root = root.resolve()
    if (root / ".git").exists():
        def git(*a: str) -> bytes:
            return subprocess.run(["git", "-C", str(root), *a], capture_output=True,
                                  check=True).stdout
        h = hashlib.sha256(git("rev-parse", "HEAD"))
        h.update(git("diff", "HEAD"))
        h.update(git("status", "--porcelain", "--untracked-files=normal"))
        return h.hexdigest()[:20]
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            st = os.lstat(os.path.join(dirpath, fn))
            h.update(f"{dirpath}/{fn}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:20]


def out_dir(kind: str, key: str) -> Path:
    return cache_root() / kind / "out" / key


def lookup(kind: str, key: str) -> Path | None:
    d = out_dir(kind, key)
    return d if (d / STAMP).is_file() else None


def publish(kind: str, key: str, fill: Callable[[Path], dict], log: Callable[[str], None]) -> Path:
    """Return the artifact for key, calling fill(tmpdir) to make it if absent.

    Builds of one kind share a build tree (kernel, QEMU), so they take turns.
    """
    found = lookup(kind, key)
    if found:
        log(f"{kind}: reusing cached {found}")
        return found
    final = out_dir(kind, key)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent.parent / ".lock", "w") as lock:
        if not _try_lock(lock):
            log(f"{kind}: waiting for another build of {kind} to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        found = lookup(kind, key)
        if found:
            log(f"{kind}: reusing cached {found}")
            return found
        return _build(kind, key, final, fill, log)


def _try_lock(f) -> bool:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _build(kind: str, key: str, final: Path, fill: Callable[[Path], dict],
           log: Callable[[str], None]) -> Path:
    tmp = final.with_name(f"{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    start = time.monotonic()
    try:
        meta = fill(tmp)
        meta = {"kind": kind, "key": key, "built_seconds": round(time.monotonic() - start, 1),
                **(meta or {})}
        (tmp / STAMP).write_text(json.dumps(meta, indent=2) + "\n")
        if final.exists():  # a stale, unstamped leftover
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"{kind}: built {final} in {meta['built_seconds']} s")
    return final


def link_artifact(name: str, target: Path, build: Path | None = None) -> Path:
    """Point <build>/artifacts/<name> at a cached artifact (atomically)."""
    d = artifacts_dir(build)
    d.mkdir(parents=True, exist_ok=True)
    link = d / name
    tmp = d / f".{name}.tmp-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)
    return link


def linked_artifact(name: str, build: Path | None = None) -> Path | None:
    link = artifacts_dir(build) / name
    return link.resolve() if link.exists() else None


def run(argv: Iterable[str], log_file: Path | None = None, **kw) -> None:
    """Run a build command; on failure, show the tail of its output."""
    argv = [str(a) for a in argv]
    if log_file is None:
        subprocess.run(argv, check=True, **kw)
        return
    with open(log_file, "ab") as f:
        proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, **kw)
    if proc.returncode != 0:
        tail = log_file.read_text(errors="replace").splitlines()[-40:]
        from svmfuzz.errors import SvmfuzzError
        raise SvmfuzzError(f"command failed ({proc.returncode}): {' '.join(argv)}\n"
                           f"last lines of {log_file}:\n" + "\n".join(tail))
