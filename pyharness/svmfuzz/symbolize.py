"""Kernel report frames to file:line, as the kernel's decode_stacktrace.sh
and faddr2line do.

A frame "func+0xoff/0xsize [module]" is looked up in the ELF symbol table
of vmlinux, or of the module's .ko (a relocatable object: its symbols are
offsets in their section, which addr2line is told with -j). A symbol of that
name whose size fits the frame's gives the address; none that fits means the
object is not the one the kernel ran, and the frame is left as it is, with a
note, rather than given a wrong line. addr2line then gives the source line
and the functions inlined there (innermost first), with the build's
directories taken off: kernel files are named as in the kernel tree, the
driver's as in guest-driver/.

    ./svmfuzz symbolize LOG|-      (the report, each frame followed by its lines)
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from svmfuzz.artifacts import module as module_build
from svmfuzz.artifacts.cache import STAMP
from svmfuzz.errors import SvmfuzzError

# "  ? func.isra.0+0x1a/0x2b0 [svmdev]"; a timestamp or caller prefix may lead.
_FRAME = re.compile(r"(?P<q>\?\s+)?(?P<func>[A-Za-z_][\w.$]*)\+0x(?P<off>[0-9a-f]+)/0x(?P<size>[0-9a-f]+)"
                    r"(?:\s+\[(?P<mod>[\w-]+)\])?")
# kallsyms sizes a symbol up to the next one: padding of a function's
# alignment comes on top of its ELF size.
_SIZE_SLACK = 64


class SymbolizeError(SvmfuzzError):
    pass


@dataclass
class Location:
    function: str
    file: str
    line: int | None

    def __str__(self) -> str:
        return f"{self.function} {self.file}:{self.line}" if self.line else \
            f"{self.function} {self.file}"


@dataclass
class Symbol:
    value: int
    size: int
    section: str   # "" in an executable (vmlinux): the value is an address


@dataclass
class _Object:
    path: Path
    relocatable: bool
    symbols: dict[str, list[Symbol]] = field(default_factory=dict)


def _run(argv: list[str], stdin: str = "") -> str:
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise SymbolizeError(f"{argv[0]} is not installed (Debian package binutils)") from e
    if done.returncode != 0:
        raise SymbolizeError(f"{' '.join(argv[:3])}...: {done.stderr.strip()[:300]}")
    return done.stdout


def _load(path: Path) -> _Object:
    if not path.is_file():
        raise SymbolizeError(f"no {path}: symbolization needs the kernel's vmlinux (built with "
                             "DWARF) and the driver's .ko")
    header = _run(["readelf", "-hW", str(path)])
    obj = _Object(path, "REL (Relocatable file)" in header)
    sections = {}
    for m in re.finditer(r"^\s*\[\s*(\d+)\]\s+(\S+)", _run(["readelf", "-SW", str(path)]), re.M):
        sections[m.group(1)] = m.group(2)
    symbols = defaultdict(list)
    # "  591: 000000000000f7c0  6259 FUNC    GLOBAL DEFAULT    1 svmdev_mirror_fault"
    for line in _run(["readelf", "-sW", str(path)]).splitlines():
        parts = line.split()
        # NOTYPE: entry points written in assembly.
        if len(parts) < 8 or parts[3] not in ("FUNC", "NOTYPE") or not parts[6].isdigit():
            continue
        try:
            value, size = int(parts[1], 16), int(parts[2], 0)
        except ValueError:
            continue
        section = sections.get(parts[6], "") if obj.relocatable else ""
        symbols[parts[7]].append(Symbol(value, size, section))
    obj.symbols = dict(symbols)
    return obj


class Symbolizer:
    """Frames to source lines against `vmlinux` and `modules` (name -> .ko);
    `prefixes` maps build directories to the names shown for them."""

    def __init__(self, vmlinux: Path, modules: dict[str, Path] | None = None,
                 prefixes: dict[str, str] | None = None) -> None:
        self._paths = {"": vmlinux, **(modules or {})}
        self._objects: dict[str, _Object] = {}
        self._prefixes = sorted((prefixes or {}).items(), key=lambda kv: -len(kv[0]))
        self._cache: dict[tuple, tuple[list[Location], str]] = {}
        self._load("")  # the kernel's must be there; a module's is read when named

    def _load(self, module: str) -> _Object | None:
        if module not in self._objects:
            path = self._paths.get(module)
            if path is None:
                return None
            self._objects[module] = _load(path)
        return self._objects[module]

    def _strip(self, path: str) -> str:
        for prefix, shown in self._prefixes:
            if path.startswith(prefix):
                return shown + path[len(prefix):].lstrip("/")
        return path

    def frames(self, frames: list[tuple[str, int, int, str]]) -> list[tuple[list[Location], str]]:
        """For each (function, offset, size, module): its locations, the
        innermost inlined function first, or [] and why there are none."""
        out: dict[int, tuple[list[Location], str]] = {}
        todo: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        for i, (func, off, size, module) in enumerate(frames):
            key = (func, off, size, module)
            if key in self._cache:
                out[i] = self._cache[key]
                continue
            obj = self._load(module)
            if obj is None:
                out[i] = ([], f"no object for module {module}")
                continue
            fits = [s for s in obj.symbols.get(func, [])
                    if s.size <= size < s.size + _SIZE_SLACK or (s.size == 0 and off < size)]
            if not fits:
                why = ("not in " if func not in obj.symbols else "size differs in ") + obj.path.name
                out[i] = ([], f"{why}: not the build that ran")
                continue
            sym = fits[0]
            todo[(module, sym.section)].append((i, sym.value + off))
        for (module, section), items in todo.items():
            obj = self._objects[module]
            argv = ["addr2line", "-e", str(obj.path), "-f", "-i", "-a"]
            if section:
                argv += ["-j", section]
            text = _run(argv, "".join(f"{addr:#x}\n" for _, addr in items))
            for (i, _), locs in zip(items, self._parse_addr2line(text)):
                out[i] = (locs, "")
                self._cache[frames[i]] = out[i]
        return [out[i] for i in range(len(frames))]

    def _parse_addr2line(self, text: str) -> list[list[Location]]:
        """addr2line -f -i -a: an address line, then function and file:line
        pairs, the innermost first."""
        groups: list[list[Location]] = []
        lines = text.splitlines()
        i = 0
        while i < len(lines):
            if lines[i].startswith("0x"):
                groups.append([])
                i += 1
                continue
            if not groups or i + 1 >= len(lines):
                break
            func, where = lines[i], lines[i + 1]
            path, _, line = where.rpartition(":")
            line = line.split()[0] if line else ""
            if path and path != "??":
                groups[-1].append(Location(func, self._strip(path),
                                           int(line) if line.isdigit() else None))
            i += 2
        return groups

    def report(self, text: str) -> str:
        """`text` with each frame line followed by its source lines; a frame
        that cannot be placed gets a note, and the rest is left as it is."""
        lines = text.splitlines()
        found = [(n, m) for n, m in ((n, _FRAME.search(line)) for n, line in enumerate(lines))
                 if m]
        results = self.frames([(m["func"], int(m["off"], 16), int(m["size"], 16), m["mod"] or "")
                               for _, m in found])
        extra: dict[int, list[str]] = {}
        for (n, m), (locs, why) in zip(found, results):
            indent = " " * (len(lines[n]) - len(lines[n].lstrip()) + 4)
            if not locs:
                extra[n] = [f"{indent}({why})"] if why else []
                continue
            extra[n] = [f"{indent}{'at' if k == len(locs) - 1 else 'inlined'} {loc}"
                        for k, loc in enumerate(locs)]
        out = []
        for n, line in enumerate(lines):
            out.append(line)
            out += extra.get(n, [])
        return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def for_build(build: Path) -> Symbolizer:
    """The symbolizer of the kernel and driver in `build`'s artifacts."""
    kernel = build / "artifacts" / "kernel"
    module = build / "artifacts" / "module"
    prefixes = {}
    try:
        meta = json.loads((kernel / STAMP).read_text())
        prefixes[meta["source"]] = ""
    except (OSError, ValueError, KeyError):
        pass
    try:
        key = json.loads((module / STAMP).read_text())["key"]
        prefixes[str(module_build.work_root(key))] = ""
    except (OSError, ValueError, KeyError):
        pass
    modules = {ko.stem: ko for ko in sorted(module.glob("*.ko"))}
    return Symbolizer(kernel / "vmlinux", modules, prefixes)


def command(args, log) -> int:
    import sys

    sym = for_build(Path(args.build_dir))
    text = sys.stdin.read() if args.log == "-" else Path(args.log).read_text(errors="replace")
    sys.stdout.write(sym.report(text))
    return 0
