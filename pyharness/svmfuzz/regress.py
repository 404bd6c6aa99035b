"""`svmfuzz regress`: the corpus replayed against its expectations.

Every corpus program states what it should give, in comment lines of its
header:

    # expect: ok
    # expect 6.1: possible deadlock in hugetlb_fault | why this kernel gives it
    # runs: 3
    # op-timeout-ms: 30000

`also[ KERNEL]: <title> | <why>` names another outcome a run may give, for a
program whose end depends on timing (a child killed in the middle of an op).

`expect:` applies to every kernel, `expect <release>:` to that release and
those below it (6.1 to 6.1.192, not to 6.12; the longest wins). The outcome is `ok` (no
finding, the program ended well) or a title as triage gives it, with the
reason it is expected after `|`. `runs:` asks for several runs of a program
whose outcome depends on timing; `op-timeout-ms:` a longer bound for each op
of a program that does more than the default bound allows under emulation. A
program passes when every run gives its expected outcome, is flaky when some
do, and fails when none does.

Each kernel's results are kept in the results directory (<release>.json); a
run is compared with the one before: new failures, fixed, flaky, unchanged.
It writes a JUnit file (one test case per program and kernel) and an HTML
page, and exits 1 when a program failed. --against runs a second kernel
(a kernel source tree, built through the cache like the default one) and
shows the two side by side.
"""

from __future__ import annotations

import html
import json
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from svmfuzz import campaign
from svmfuzz.errors import SvmfuzzError
from svmfuzz.paths import REPO_ROOT

CORPUS = REPO_ROOT / "corpus" / "programs"
OK = "ok"
_EXPECT = re.compile(r"^#\s*(?P<kind>expect|also)(?:\s+(?P<kernel>[0-9][\w.+-]*))?\s*:\s*"
                     r"(?P<rest>.*)$")
_RUNS = re.compile(r"^#\s*runs\s*:\s*(?P<n>.*)$")
_OP_TIMEOUT = re.compile(r"^#\s*op-timeout-ms\s*:\s*(?P<n>.*)$")


class ExpectationError(SvmfuzzError):
    pass


@dataclass(frozen=True)
class Expectation:
    outcome: str        # OK or a title
    why: str
    kernel: str = ""    # release prefix; "" for every kernel
    line: int = 0


@dataclass
class Program:
    path: Path
    text: str
    expectations: list[Expectation]
    runs: int = 1
    op_timeout_ms: int = 0    # 0: the command's
    also: list[Expectation] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.stem

    def expected(self, release: str) -> Expectation:
        return max((e for e in self.expectations if _applies(e, release)),
                   key=lambda e: len(e.kernel))

    def allowed(self, release: str) -> set[str]:
        """The outcomes a run may give on `release`."""
        return {self.expected(release).outcome} | {a.outcome for a in self.also
                                                   if _applies(a, release)}


def _applies(e: Expectation, release: str) -> bool:
    # "6.1" is 6.1 and 6.1.x, not 6.12.
    return not e.kernel or release == e.kernel or release.startswith(e.kernel + ".")


def parse(path: Path, text: str) -> Program:
    """A corpus program's expectations; ExpectationError names the file and
    the line of anything malformed."""
    expectations, runs, op_timeout_ms, also = [], 1, 0, []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if m := _EXPECT.match(line):
            outcome, sep, why = (s.strip() for s in m["rest"].partition("|"))
            if not outcome or (outcome != OK and (not sep or not why)):
                raise ExpectationError(
                    f"{path}:{n}: want '# expect[ KERNEL]: ok' or '# expect[ KERNEL]: "
                    f"<title> | <why>', got {raw.strip()!r}")
            kernel = m["kernel"] or ""
            if m["kind"] == "also":
                if outcome == OK and not why:
                    why = "no finding"
                also.append(Expectation(outcome, why, kernel, n))
                continue
            if any(e.kernel == kernel for e in expectations):
                raise ExpectationError(f"{path}:{n}: a second expectation for "
                                       f"{'kernel ' + kernel if kernel else 'every kernel'}")
            expectations.append(Expectation(outcome, why, kernel, n))
        elif m := _RUNS.match(line):
            if not m["n"].isdigit() or not 1 <= int(m["n"]) <= 20:
                raise ExpectationError(f"{path}:{n}: want '# runs: N' with N from 1 to 20, "
                                       f"got {raw.strip()!r}")
            runs = int(m["n"])
        elif m := _OP_TIMEOUT.match(line):
            if not m["n"].isdigit() or not 100 <= int(m["n"]) <= 120000:
                raise ExpectationError(f"{path}:{n}: want '# op-timeout-ms: N' with N from 100 "
                                       f"to 120000, got {raw.strip()!r}")
            op_timeout_ms = int(m["n"])
    if not any(e.kernel == "" for e in expectations):
        raise ExpectationError(f"{path}: states no expected outcome for every kernel "
                               "('# expect: ok', or a title and why)")
    return Program(path, text, expectations, runs, op_timeout_ms, also)


def load_corpus(corpus: Path) -> list[Program]:
    paths = sorted(corpus.glob("*.svmp"))
    if not paths:
        raise SvmfuzzError(f"{corpus}: no programs (*.svmp)")
    return [parse(p, p.read_text()) for p in paths]


@dataclass
class Result:
    program: str
    expected: str
    why: str
    titles: dict[str, int] = field(default_factory=dict)
    status: str = ""    # pass, fail, flaky
    seconds: float = 0.0

    def got(self) -> str:
        return ", ".join(f"{t} ({n})" if len(self.titles) > 1 or n > 1 else t
                         for t, n in self.titles.items())


def judge(allowed: str | set[str], titles: list[str]) -> str:
    allowed = {allowed} if isinstance(allowed, str) else allowed
    hits = sum(1 for t in titles if t in allowed)
    return "pass" if hits == len(titles) else "fail" if hits == 0 else "flaky"


def outcome_of(title: str) -> str:
    return OK if title == campaign.NO_FINDING else title


def compare(now: list[Result], before: dict[str, dict]) -> dict[str, list[str]]:
    """Programs by how they moved since the run before."""
    out = {"new failures": [], "fixed": [], "flaky": [], "unchanged": []}
    for r in now:
        was = before.get(r.program, {}).get("status")
        if r.status == "flaky":
            out["flaky"].append(r.program)
        elif r.status == "fail" and was != "fail":
            out["new failures"].append(r.program)
        elif r.status == "pass" and was in ("fail", "flaky"):
            out["fixed"].append(r.program)
        else:
            out["unchanged"].append(r.program)
    return out


def junit(suites: dict[str, list[Result]]) -> str:
    root = ET.Element("testsuites", name="svmfuzz regress")
    for release, results in suites.items():
        suite = ET.SubElement(root, "testsuite", name=f"corpus on {release}",
                              tests=str(len(results)),
                              failures=str(sum(r.status == "fail" for r in results)),
                              skipped="0", time=f"{sum(r.seconds for r in results):.1f}")
        for r in results:
            case = ET.SubElement(suite, "testcase", classname=f"corpus.{release}", name=r.program,
                                 time=f"{r.seconds:.1f}")
            if r.status != "pass":
                tag = "failure"
                node = ET.SubElement(case, tag, message=f"expected {r.expected}, got {r.got()}",
                                     type=r.status)
                node.text = f"expected: {r.expected} ({r.why or 'no finding'})\ngot: {r.got()}\n"
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def page(suites: dict[str, list[Result]], moved: dict[str, dict[str, list[str]]]) -> str:
    e = html.escape
    releases = list(suites)
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>svmfuzz regress</title>",
           "<style>body{font-family:sans-serif;max-width:80em;margin:1em auto}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em}"
           ".fail{background:#fdd}.flaky{background:#ffd}.pass{background:#dfd}</style>"
           "</head><body><h1>svmfuzz regress</h1>",
           f"<p>{e(time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))}</p>"]
    for release in releases:
        m = moved[release]
        out.append(f"<p><b>{e(release)}</b>: " + "; ".join(
            f"{e(k)} {len(v)}" + (f" ({e(', '.join(v))})" if v and k != "unchanged" else "")
            for k, v in m.items()) + "</p>")
    out.append("<table id='results'><tr><th>program</th>" + "".join(
        f"<th>{e(r)}: expected</th><th>{e(r)}: got</th>" for r in releases) + "</tr>")
    by_name = [{r.program: r for r in suites[rel]} for rel in releases]
    for name in sorted({r.program for rs in suites.values() for r in rs}):
        cells = []
        for results in by_name:
            r = results.get(name)
            cells.append("<td></td><td></td>" if r is None else
                         f"<td title='{e(r.why)}'>{e(r.expected)}</td>"
                         f"<td class='{e(r.status)}'>{e(r.got())}</td>")
        out.append(f"<tr><td>{e(name)}</td>{''.join(cells)}</tr>")
    out.append("</table></body></html>")
    return "\n".join(out) + "\n"


def table(suites: dict[str, list[Result]]) -> list[str]:
    """The text table: one line a program, the kernels side by side."""
    releases = list(suites)
    by_name = [{r.program: r for r in suites[rel]} for rel in releases]
    names = sorted({r.program for rs in suites.values() for r in rs})
    width = max(len(n) for n in names)
    lines = [f"{'program':<{width}}  " + "  ".join(f"{r:<30}" for r in releases)]
    for name in names:
        cells = []
        for results in by_name:
            r = results.get(name)
            cells.append(f"{'-':<30}" if r is None else
                         f"{r.status.upper() if r.status != 'pass' else 'pass':<6}"
                         f"{'' if r.status == 'pass' else ' ' + r.got():<24}")
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return lines


def run_corpus(r, programs: list[Program], release: str, log, knobs=None) -> list[Result]:
    """Each program's runs; `knobs`: the driver's test-only knobs for every
    program (a planted bug, to show that regress catches it)."""
    from svmfuzz import runner

    encoded = runner.encode_programs([p.path for p in programs])
    results = []
    for n, (p, data) in enumerate(zip(programs, encoded), 1):
        exp = p.expected(release)
        start = time.monotonic()
        cfg = r.cfg
        bounds = cfg.op_timeout_ms, cfg.program_timeout_ms
        if p.op_timeout_ms:
            cfg.op_timeout_ms = p.op_timeout_ms
            cfg.program_timeout_ms = max(bounds[1], 4 * p.op_timeout_ms)
        titles = []
        try:
            for _ in range(p.runs):
                # A report is made once a boot (lockdep's of a lock chain, say):
                # a program expected to give one starts from a fresh kernel.
                if exp.outcome != OK and r.life is not None:
                    r.end_life(f"regress: a fresh kernel for {p.name}")
                titles.append(outcome_of(campaign.run_title(r, data, knobs, p.name, log)))
        finally:
            cfg.op_timeout_ms, cfg.program_timeout_ms = bounds
        res = Result(p.name, exp.outcome, exp.why, dict(Counter(titles)),
                     judge(p.allowed(release), titles), time.monotonic() - start)
        results.append(res)
        log(f"regress: {release}: {n}/{len(programs)} {p.name}: {res.status}"
            + ("" if res.status == "pass" else f": expected {exp.outcome}, got {res.got()}"))
    return results


def _release(kernel_dir: Path) -> str:
    from svmfuzz.artifacts.cache import STAMP

    try:
        return json.loads((kernel_dir / STAMP).read_text())["release"]
    except (OSError, ValueError, KeyError) as e:
        raise SvmfuzzError(f"{kernel_dir}: no kernel release recorded ({e})") from e


def _run_kernel(args, programs: list[Program], kernel_tree: str, log) -> tuple[str, list[Result]]:
    from svmfuzz import native, runner, vm

    build = Path(args.build_dir)
    artifacts = vm.Artifacts.for_kernel(build, args.qemu_flavour, kernel_tree or None,
                                        args.kernel_profile, log)
    release = _release(artifacts.kernel)
    workdir = Path(args.results) / f"vm-{release}"
    accel = vm.choose_accel(args.accel, artifacts, workdir, log)
    cfg = native.RunnerConfig(
        vm.config(artifacts, workdir, accel=accel, cpus=args.cpus, memory=args.memory,
                  devices=args.devices, vram=vm.vram_size(args.vram), run="executor",
                  extra_append=args.append.split()),
        boot_timeout=args.timeout, op_timeout_ms=args.op_timeout_ms,
        program_timeout_ms=args.program_timeout_ms, reset=runner.reset_mode(args.reset))
    with runner.Runner(cfg, log) as r:
        return release, run_corpus(r, programs, release, log,
                                   campaign.parse_knobs(args.knobs, "--knobs"))


def command(args, log) -> int:
    campaign.parse_knobs(args.knobs, "--knobs")  # a bad one is said before any boot
    programs = load_corpus(Path(args.corpus))
    if args.only:
        programs = [p for p in programs if p.name in args.only.split(",")]
        if not programs:
            raise SvmfuzzError(f"--only {args.only}: no such program in {args.corpus}")
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    suites: dict[str, list[Result]] = {}
    moved: dict[str, dict[str, list[str]]] = {}
    for tree in [args.kernel, *([args.against] if args.against else [])]:
        release, results = _run_kernel(args, programs, tree, log)
        previous_file = results_dir / f"{release}.json"
        try:
            before = {r["program"]: r for r in json.loads(previous_file.read_text())["results"]}
        except (OSError, ValueError, KeyError, TypeError):
            before = {}
        moved[release] = compare(results, before)
        suites[release] = results
        campaign.write_atomic(previous_file, json.dumps(
            {"release": release, "time": time.time(), "results": [asdict(r) for r in results]},
            indent=1) + "\n")
    for line in table(suites):
        log(f"regress: {line}")
    for release, m in moved.items():
        log(f"regress: {release}: " + "; ".join(
            f"{k}: {len(v)}" + (f" ({', '.join(v)})" if v and k != "unchanged" else "")
            for k, v in m.items()))
    campaign.write_atomic(results_dir / "regress.html", page(suites, moved))
    if args.junit:
        campaign.write_atomic(Path(args.junit), junit(suites))
    failed = [f"{rel}: {r.program} (expected {r.expected}, got {r.got()})"
              for rel, rs in suites.items() for r in rs if r.status == "fail"]
    for f in failed:
        log(f"regress: FAILED {f}")
    log(f"regress: {results_dir / 'regress.html'}" + (f", {args.junit}" if args.junit else ""))
    return 1 if failed else 0
