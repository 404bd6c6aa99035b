"""The kernel's own hmm-tests selftest, run in the guest, results recorded.

The results file lists every test with its status and, for failures, the
assertion the harness printed; an expectations file says which failures are
known and why, so a new failure or a fixed one is never silent.
"""

import fnmatch
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from svmfuzz import native
from svmfuzz.errors import SvmfuzzError
from svmfuzz.oracles import console as console_oracle
from svmfuzz.vm import config_from_args

BEGIN = "svmfuzz-hmm-tests: begin"
LEAK_CHECK_DONE = "svmfuzz-hmm-tests: leak check done"
RMMOD_FAILED = re.compile(r"svmfuzz-init: rmmod (\S+) failed")
END = re.compile(r"svmfuzz-hmm-tests: end rc=(\d+)")
RESULT = re.compile(r"^(not ok|ok) (\d+) (\S+)(?:\s+#\s*(SKIP|XFAIL|TODO)\b\s*(.*))?")
RUN = re.compile(r"^#\s+RUN\s+(\S+)")
PLAN = re.compile(r"^1\.\.(\d+)")
DRIVER_APPEND = {
    "test_hmm": ["svmfuzz.modules=test_hmm"],
    "svmdev": ["svmfuzz.modules=svmdev", "svmfuzz.svmdev=dmirror_compat=1"],
}
VERDICT = re.compile(r"^#\s+(OK|FAIL|SKIP|XFAIL|XPASS)\s+\S+")


@dataclass
class TestResult:
    name: str
    status: str        # pass, fail, skip
    reason: str = ""


@dataclass
class SelftestReport:
    planned: int | None
    exit_code: int | None
    tests: list[TestResult]

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "fail": 0, "skip": 0}
        for t in self.tests:
            out[t.status] += 1
        return out

    def to_json(self) -> dict:
        return {"planned": self.planned, "exit_code": self.exit_code, "counts": self.counts(),
                "tests": [asdict(t) for t in self.tests]}


def parse_console(console: str) -> SelftestReport:
    """Pull the kselftest TAP output of hmm-tests out of a console log."""
    start = console.find(BEGIN)
    if start < 0:
        raise SvmfuzzError("hmm-tests never started in the guest")
    body = console[start + len(BEGIN):]
    end = END.search(body)
    exit_code = int(end.group(1)) if end else None
    planned = None
    tests: list[TestResult] = []
    notes: list[str] = []
    for raw in (body[:end.start()] if end else body).splitlines():
        line = raw.strip()
        if m := PLAN.match(line):
            planned = int(m.group(1))
        elif RUN.match(line):
            notes = []
        elif m := RESULT.match(line):
            ok, _, name, directive, why = m.groups()
            if directive == "SKIP":
                tests.append(TestResult(name, "skip", why.strip()))
            elif ok == "ok":
                tests.append(TestResult(name, "pass"))
            else:
                tests.append(TestResult(name, "fail", "; ".join(notes) or "no message"))
        elif line.startswith("#") and not VERDICT.match(line):
            notes.append(line.lstrip("# ").strip())
    return SelftestReport(planned, exit_code, tests)


def load_expectations(path: Path) -> dict[str, tuple[str, str]]:
    """pattern -> (status, reason) from lines 'pattern status reason...'; # comments.

    A pattern is a test name or a shell-style wildcard covering several. The
    status is fail, skip, or flaky: a test whose outcome the kernel does not
    decide on its own (it may pass or fail), which the reason must explain.
    """
    expected = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 3 or parts[1] not in ("fail", "skip", "flaky"):
            raise SvmfuzzError(f"{path}:{n}: expected 'test-name fail|skip|flaky reason'")
        expected[parts[0]] = (parts[1], parts[2])
    return expected


def compare(report: SelftestReport, expected: dict[str, tuple[str, str]]) -> list[str]:
    """Differences between a run and its expectations; empty when they agree."""
    problems = []
    if report.planned is None or len(report.tests) != report.planned:
        problems.append(f"{len(report.tests)} results for {report.planned} planned tests: "
                        "the run did not finish")
    used = set()
    for t in report.tests:
        want = "pass"
        for pattern, (status, _) in expected.items():
            if fnmatch.fnmatchcase(t.name, pattern):
                want = status
                used.add(pattern)
                break
        if t.status != want and not (want == "flaky" and t.status in ("pass", "fail")):
            detail = f" ({t.reason})" if t.reason else ""
            problems.append(f"{t.name}: {t.status}, expected {want}{detail}")
    for pattern in expected:
        if pattern not in used:
            problems.append(f"{pattern}: listed in the expectations but no such test ran")
    return problems


def command(args, log) -> int:
    cfg = config_from_args(args, "hmm-tests", log)
    # Both drivers provide /dev/hmm_dmirror*: load exactly one.
    cfg.extra_append += DRIVER_APPEND[args.driver]
    results = Path(args.results) if args.results else cfg.workdir / "hmm-tests.json"
    with native.Vm(cfg) as vm:
        log(f"selftest: hmm-tests on {args.driver} in the guest ({cfg.accel}, {cfg.cpus} vCPUs); "
            f"console: {vm.console_log}")
        if vm.wait_exit(args.timeout) is None:
            log(f"selftest: guest still running after {args.timeout:.0f} s; stopping it")
        seconds = vm.elapsed()
        console = vm.console_log.read_text(errors="replace")
    report = parse_console(console)
    doc = report.to_json()
    doc["seconds"] = round(seconds, 1)
    doc["kernel_reports"] = [f.title for f in console_oracle.parse(console)]
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(doc, indent=2) + "\n")
    c = report.counts()
    log(f"selftest: {c['pass']} passed, {c['fail']} failed, {c['skip']} skipped of "
        f"{report.planned} in {seconds:.0f} s; results: {results}")
    for t in report.tests:
        if t.status != "pass":
            log(f"  {t.status:4} {t.name}: {t.reason}")
    for title in doc["kernel_reports"]:
        log(f"selftest: kernel reported: {title}")
    unload = [f"{m} did not unload" for m in RMMOD_FAILED.findall(console)]
    if LEAK_CHECK_DONE not in console:
        unload.append("the guest stopped before its unload and leak check")
    for p in unload:
        log(f"selftest: {p}")
    if args.expect:
        problems = compare(report, load_expectations(Path(args.expect))) + unload
        for p in problems:
            log(f"selftest: unexpected: {p}")
        if problems or doc["kernel_reports"]:
            return 1
        log("selftest: results match the expectations")
    return 0
