"""Minimizing a program that gives a title: `svmfuzz minimize INPUT`, and
triage for the best input of every bucket.

The program is worked on in its text form, one op a line. Each step makes a
candidate (an op or a fork's whole block dropped, a fork's body run in the
parent, an op moved from a thread to the main one, a number made smaller);
the program parser (native.format_program) checks it is a valid program,
and it runs `tries` times. A step is kept when the title comes back at
least as often as it did from the program before minimization, so a
timing-dependent bug gets several tries per step and loses no reliability.
Rounds go on until one changes nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# Arguments that make a program bigger or longer, not others (a buffer's
# offset, a seed, a file or a device picks what is used, not how much).
_SHRINK = re.compile(r"\b(pages|count|us|times|percent|npages|size|loops)=(\d+)\b")
_THREAD = re.compile(r"^@\d+\s+")
MAX_ROUNDS = 4


def ops(text: str) -> list[str]:
    """The program's lines without comments and blank lines."""
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def _block_end(lines: list[str], start: int) -> int:
    """The index of the line closing the block that `start` opens."""
    depth = 0
    for i in range(start, len(lines)):
        depth += lines[i].endswith("{") - (lines[i] == "}")
        if depth == 0:
            return i
    return len(lines) - 1


def _balanced(chunk: list[str]) -> bool:
    depth = 0
    for line in chunk:
        depth += line.endswith("{") - (line == "}")
        if depth < 0:
            return False
    return depth == 0


def candidates(lines: list[str]) -> Iterator[tuple[str, list[str]]]:
    """Smaller programs than `lines`, each with what was done, the ones
    that take most away first: halves, quarters and so on of the program
    (as delta debugging does), then one op or block at a time."""
    size = len(lines) // 2
    while size >= 2:
        for start in range(len(lines) - size, -1, -size):
            chunk = lines[start:start + size]
            if _balanced(chunk):
                yield f"drop ops {start}..{start + size - 1}", lines[:start] + lines[start + size:]
        size //= 2
    for i in reversed(range(len(lines))):
        if lines[i] == "}":
            continue
        end = _block_end(lines, i) if lines[i].endswith("{") else i
        yield f"drop {lines[i]}", lines[:i] + lines[end + 1:]
    for i, line in enumerate(lines):
        if line.endswith("{"):
            end = _block_end(lines, i)
            yield f"unwrap {line}", lines[:i] + lines[i + 1:end] + lines[end + 1:]
    for i, line in enumerate(lines):
        if _THREAD.match(line):
            yield f"main thread: {line}", lines[:i] + [_THREAD.sub("", line)] + lines[i + 1:]
    for i, line in enumerate(lines):
        for m in _SHRINK.finditer(line):
            value = int(m.group(2))
            for smaller in sorted({1, value // 2} - {value}):
                if 0 < smaller < value:
                    new = line[:m.start(2)] + str(smaller) + line[m.end(2):]
                    yield f"{m.group(1)}={smaller}: {line}", lines[:i] + [new] + lines[i + 1:]


def minimize(text: str, holds: Callable[[str], bool], valid: Callable[[str], bool],
             log=lambda msg: None, max_steps: int = 300) -> str:
    """The smallest program found from `text` for which holds() is true;
    `valid` rejects candidates before they run. After every kept step the
    candidates are made again from the smaller program; one that was run
    and failed is not run again."""
    lines = ops(text)
    tried: set[str] = set()
    runs, start = 0, time.monotonic()
    while runs < max_steps:
        todo = [(what, "\n".join(c) + "\n") for what, c in candidates(lines)]
        todo = [(what, p) for what, p in todo if p not in tried]
        kept = None
        for n, (what, program) in enumerate(todo):
            tried.add(program)
            # A program with no op is no reproducer, whatever it gives.
            if runs >= max_steps or not ops(program) or not valid(program):
                continue
            runs += 1
            ok = holds(program)
            per_run = (time.monotonic() - start) / runs
            log(f"minimize: {'kept' if ok else 'no'}: {what} ({len(lines)} ops; at most "
                f"{len(todo) - n - 1} more steps, ETA {_clock(per_run * (len(todo) - n - 1))})")
            if ok:
                kept = program
                break
        if kept is None:
            break
        lines = ops(kept)
    return "\n".join(lines) + "\n"


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


def is_program(text: str) -> bool:
    """The parser accepts `text` as a program."""
    from svmfuzz import native

    try:
        native.format_program(text)
    except ValueError:
        return False
    return True


def guest_holds(r, title: str, knobs, tries: int, need: int, log) -> Callable[[str], bool]:
    """holds(text): the program gives `title` in at least `need` of `tries`
    runs in the runner `r` (it stops as soon as that is decided)."""
    from svmfuzz import campaign, runner

    def holds(text: str) -> bool:
        data = runner.encode_texts({"candidate": text})["candidate"]
        got = 0
        for k in range(tries):
            got += campaign.run_title(r, data, knobs, "minimize", log) == title
            if got >= need or got + tries - k - 1 < need:
                break
        return got >= need
    return holds


def minimized_path(path: Path) -> Path:
    """Where the minimal program of `path` goes: next to it."""
    stem = path.name[:-len(".svmp")] if path.name.endswith(".svmp") else path.name
    return path.with_name(stem + ".min.svmp")


def write_minimized(path: Path, text: str, title: str, reproduced: int, tries: int,
                    source: Path) -> None:
    from svmfuzz.campaign import write_atomic

    header = (f"# Minimized from {source.name}: {title}\n"
              f"# in {reproduced} of {tries} runs of the original, and at least as often here.\n")
    write_atomic(path, header + text)


def command(args, log) -> int:
    from svmfuzz import campaign, repro, runner
    from svmfuzz.errors import SvmfuzzError

    path = Path(args.input)
    if args.tries < 1:
        raise SvmfuzzError("--tries wants at least 1 run")
    data, program, knobs, cfg = repro.input_run(path, args, log, "minimize-vm")
    with runner.Runner(cfg, log) as r:
        t = campaign.rerun(r, path, data, program, knobs, args.tries, log)
        (b,) = campaign.bucket([t])
        if b.title == campaign.NO_FINDING:
            raise SvmfuzzError(f"{path}: gave no finding in {t.runs} run(s): nothing to minimize")
        log(f"minimize: {path.name}: {b.title} in {t.reproduced}/{t.runs} runs; minimizing "
            f"{len(ops(program))} ops")
        out = minimize(program, guest_holds(r, b.title, knobs, args.tries, t.reproduced, log),
                       is_program, log, args.max_steps)
    target = minimized_path(path)
    write_minimized(target, out, b.title, t.reproduced, t.runs, path)
    log(f"minimize: {len(ops(program))} -> {len(ops(out))} ops, in {target}")
    return 0
