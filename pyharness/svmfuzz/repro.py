"""Reproducing one input: `svmfuzz prog2c` writes it as a standalone C
program (svmprog prog2c, fuzz/program/csource.h) that runs in the guest
without the executor; `svmfuzz repro` runs it again and again through the
executor with every oracle, as triage does, and says how often it gave
which title.

An input is a program in the text form (NAME.svmp) or a fuzzer input (any
other file, decoded as svmprog decode does). One saved by a campaign
(DIR/crashes/crash-...) runs as the campaign ran it: DIR/campaign.conf's
driver knobs, bounds and kernel arguments.
"""

from __future__ import annotations

import subprocess
from dataclasses import fields
from pathlib import Path

from svmfuzz import campaign, protocol, symbolize
from svmfuzz.errors import SvmfuzzError


def svmprog_path(build: Path) -> Path:
    path = build / "fuzz" / "program" / "svmprog"
    if not path.is_file():
        raise SvmfuzzError(f"{path} is missing: build it (cmake --build {build} --target svmprog)")
    return path


def knob_args(knobs: protocol.Knobs | None) -> list[str]:
    """svmprog prog2c's --knob arguments for the knobs that are set."""
    if knobs is None:
        return []
    out = []
    for f in fields(protocol.Knobs):
        if getattr(knobs, f.name):
            out += ["--knob", f"{f.name}={getattr(knobs, f.name)}"]
    # All zero is still knobs to set, as the executor sets them.
    return out or ["--knob", f"{fields(protocol.Knobs)[0].name}=0"]


def generate(svmprog: Path, program: Path, target: str = "svmdev",
             knobs: protocol.Knobs | None = None, repeat: int = 1,
             program_timeout_ms: int | None = None) -> str:
    """The C reproducer of `program`; SvmfuzzError says why there is none
    (a malformed program, an op the target cannot express)."""
    argv = [str(svmprog), "prog2c", "--target", target, "--repeat", str(repeat),
            *knob_args(knobs)]
    if program_timeout_ms is not None:
        argv += ["--timeout-ms", str(program_timeout_ms)]
    done = subprocess.run([*argv, str(program)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SvmfuzzError(f"prog2c: {done.stderr.strip() or f'svmprog exited with {done.returncode}'}")
    return done.stdout


def _settings(path: Path, args, log) -> tuple[protocol.Knobs | None, int, int]:
    """Knobs and bounds: --knobs, else the campaign's when the input is one of
    its saved inputs, else none."""
    given = campaign.parse_knobs(args.knobs, "--knobs") if args.knobs else None
    workdir = campaign.campaign_of(path)
    if workdir is None:
        return given, args.op_timeout_ms, args.program_timeout_ms
    knobs, op_ms, program_ms = campaign.campaign_settings(workdir, args)
    log(f"{args.command}: {path.name} is an input of the campaign in {workdir}: "
        f"its campaign.conf's settings apply")
    return given if args.knobs else knobs, op_ms, program_ms


def prog2c_command(args, log) -> int:
    path = Path(args.program)
    if not path.is_file():
        raise SvmfuzzError(f"{path}: no such file")
    knobs, _, program_ms = _settings(path, args, lambda msg: None)
    source = generate(svmprog_path(Path(args.build_dir)), path, args.target, knobs, args.repeat,
                      program_ms)
    if args.output:
        Path(args.output).write_text(source)
        log(f"prog2c: wrote {args.output}; build it with: gcc -static -pthread -O1 -o repro "
            f"{args.output}")
    else:
        print(source, end="")
    return 0


def load_input(path: Path, svmprog: Path) -> tuple[bytes, str]:
    """The binary form of an input and its text form."""
    from svmfuzz import runner

    if path.suffix == ".svmp":
        (data,) = runner.encode_programs([path], svmprog)
        return data, path.read_text()
    data, why = campaign.check_input(path)
    program = ""
    if data is not None:
        program, why = campaign.decode(svmprog, path)
    if why:
        raise SvmfuzzError(f"{path}: {why}")
    return data, program


def input_run(path: Path, args, log, vm_dir: str):
    """One input to run again as its campaign ran it: its binary and text
    forms, the knobs and the runner's configuration; a saved input's VM
    console logs go to its campaign's `vm_dir`."""
    from svmfuzz import native, runner
    from svmfuzz.vm import config_from_args

    if not path.is_file():
        raise SvmfuzzError(f"{path}: no such file")
    data, program = load_input(path, svmprog_path(Path(args.build_dir)))
    knobs, op_ms, program_ms = _settings(path, args, log)
    workdir = campaign.campaign_of(path)
    if not args.workdir and workdir is not None:
        args.workdir = str(workdir / vm_dir)
    cfg = native.RunnerConfig(config_from_args(args, "executor", log), boot_timeout=args.timeout,
                              op_timeout_ms=op_ms, program_timeout_ms=program_ms,
                              reset=runner.reset_mode(args.reset))
    return data, program, knobs, cfg


def repro_command(args, log) -> int:
    from svmfuzz import runner

    path = Path(args.input)
    if args.n < 1:
        raise SvmfuzzError("-n wants at least 1 run")
    data, program, knobs, cfg = input_run(path, args, log, "repro-vm")
    try:
        symbolizer = symbolize.for_build(Path(args.build_dir))
    except symbolize.SymbolizeError as e:
        log(f"repro: reports will not be symbolized: {e}")
        symbolizer = None
    with runner.Runner(cfg, log) as r:
        t = campaign.rerun(r, path, data, program, knobs, args.n, log, symbolizer)
    (b,) = campaign.bucket([t])
    if b.title == campaign.NO_FINDING:
        log(f"repro: {path.name}: did not reproduce: {campaign.NO_FINDING} in {t.runs} run(s)")
        return 1
    log(f"repro: {path.name}: reproduced {t.reproduced}/{t.runs}: {b.title}")
    for title, n in t.titles.items():
        if title != b.title:
            log(f"repro: {path.name}: also {n}/{t.runs}: {title}")
    if t.console_log:
        log(f"repro: console of a run that reproduced it: {t.console_log}")
    for line in t.report.splitlines():
        log(f"repro: | {line}")
    return 0
