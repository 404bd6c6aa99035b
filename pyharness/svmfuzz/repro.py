"""Reproducing one input: `svmfuzz prog2c` writes it as a standalone C
program (native.c_source, fuzz/program/csource.h) that runs in the guest
without the executor; `svmfuzz repro` runs it again and again through the
executor with every oracle, as triage does, and says how often it gave
which title.

An input is a program in the text form (NAME.svmp) or a fuzzer input (any
other file, decoded as svmprog decode does). One saved by a campaign
(DIR/crashes/crash-...) runs as the campaign ran it: DIR/campaign.conf's
driver knobs, bounds and kernel arguments.
"""

from __future__ import annotations

from pathlib import Path

from svmfuzz import campaign, native, protocol, symbolize
from svmfuzz.errors import SvmfuzzError


def generate(program: Path, target: str = "svmdev", knobs: protocol.Knobs | None = None,
             repeat: int = 1, program_timeout_ms: int | None = None) -> str:
    """The C reproducer of `program`; SvmfuzzError says why there is none
    (a malformed program, an op the target cannot express)."""
    from svmfuzz import runner

    text = program.suffix == ".svmp"
    try:
        data = runner.encode_programs([program])[0] if text else program.read_bytes()
    except SvmfuzzError as e:
        raise SvmfuzzError(f"prog2c: {e}") from None
    except OSError as e:
        raise SvmfuzzError(f"prog2c: {program}: cannot read it: {e.strerror}") from None
    if not native.decode_program(data):
        raise SvmfuzzError(f"prog2c: {program}: {'the program has' if text else 'it decodes to'} "
                           "no op: nothing to reproduce")
    options = {} if program_timeout_ms is None else {"program_timeout_ms": program_timeout_ms}
    try:
        # All knobs zero is still knobs to set, as the executor sets them.
        return native.c_source(data, target, knobs.values() if knobs is not None else [],
                               repeat, **options)
    except ValueError as e:
        raise SvmfuzzError(f"prog2c: {program}: {e}") from None


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
    source = generate(path, args.target, knobs, args.repeat, program_ms)
    if args.output:
        Path(args.output).write_text(source)
        log(f"prog2c: wrote {args.output}; build it with: gcc -static -pthread -O1 -o repro "
            f"{args.output}")
    else:
        print(source, end="")
    return 0


def load_input(path: Path) -> tuple[bytes, str]:
    """The binary form of an input and its text form."""
    from svmfuzz import runner

    if path.suffix == ".svmp":
        (data,) = runner.encode_programs([path])
        return data, path.read_text()
    data, why = campaign.check_input(path)
    program = ""
    if data is not None:
        program, why = campaign.decode(data)
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
    data, program = load_input(path)
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
