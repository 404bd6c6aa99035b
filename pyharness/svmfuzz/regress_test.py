"""svmfuzz regress without a guest: expectations, verdicts, comparison with
the run before, JUnit and the command against a stand-in runner."""

import json
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from svmfuzz import cli, protocol, regress
from svmfuzz.oracles.console import Finding
from svmfuzz.paths import build_dir


def test_every_corpus_program_states_its_outcome():
    programs = regress.load_corpus(regress.CORPUS)
    assert len(programs) >= 40
    for p in programs:
        assert p.expected("6.12.118").outcome, p.path


def test_expectations_by_kernel_and_runs(tmp_path):
    p = regress.parse(tmp_path / "a.svmp", "# about\n# expect: ok\n# expect 6.1: WARNING in x | "
                                          "6.1 warns\n# expect 6.12.1: ok\n# runs: 3\n"
                                          "# op-timeout-ms: 30000\nyield\n")
    assert (p.runs, p.op_timeout_ms) == (3, 30000)
    assert p.expected("6.12.118").outcome == "ok"           # 6.1 is not 6.12 ...
    assert p.expected("6.12.1").outcome == "ok"             # ... and 6.12.1 is its own
    assert p.expected("6.12.10").outcome == "ok"
    assert (p.expected("6.1.0").outcome, p.expected("6.1.0").why) == ("WARNING in x", "6.1 warns")


@pytest.mark.parametrize("text,line,what", [
    ("yield\n", None, "states no expected outcome"),
    ("# expect: WARNING in x\n", 1, "want '# expect[ KERNEL]: ok'"),
    ("# expect: ok\n# expect: ok\n", 2, "a second expectation for every kernel"),
    ("# expect: ok\n\n# runs: many\n", 3, "want '# runs: N'"),
    ("# expect: ok\n# op-timeout-ms: 5\n", 2, "want '# op-timeout-ms: N'"),
    ("# expect 6.1: ok\n", None, "states no expected outcome"),
])
def test_a_malformed_expectation_names_the_file_and_line(tmp_path, text, line, what):
    path = tmp_path / "bad.svmp"
    with pytest.raises(regress.ExpectationError) as e:
        regress.parse(path, text)
    assert str(e.value).startswith(f"{path}:{line}: " if line else f"{path}: ")
    assert what in str(e.value)


def test_also_allows_another_outcome_on_its_kernels(tmp_path):
    p = regress.parse(tmp_path / "a.svmp", "# expect: ok\n# also 6.1: hung: op 3 | a timing\n")
    assert p.allowed("6.1.192") == {"ok", "hung: op 3"}
    assert p.allowed("6.12.118") == {"ok"}
    assert regress.judge(p.allowed("6.1.192"), ["hung: op 3", "ok"]) == "pass"
    assert regress.judge(p.allowed("6.12.118"), ["hung: op 3", "ok"]) == "flaky"


def test_verdicts_and_what_moved():
    assert regress.judge("ok", ["ok", "ok"]) == "pass"
    assert regress.judge("ok", ["x", "ok"]) == "flaky"
    assert regress.judge("ok", ["x"]) == "fail"
    now = [regress.Result("a", "ok", "", {"x": 1}, "fail"), regress.Result("b", "ok", "", {}, "pass"),
           regress.Result("c", "ok", "", {}, "flaky"), regress.Result("d", "ok", "", {}, "fail"),
           regress.Result("e", "ok", "", {}, "pass")]
    before = {"a": {"status": "pass"}, "b": {"status": "fail"}, "d": {"status": "fail"}}
    assert regress.compare(now, before) == {"new failures": ["a"], "fixed": ["b"],
                                            "flaky": ["c"], "unchanged": ["d", "e"]}


def test_junit_is_xml_with_a_case_per_program():
    suites = {"6.12.118": [regress.Result("a", "ok", "", {"ok": 1}, "pass", 1.5),
                           regress.Result("b", "ok", "", {"KASAN: x": 2}, "fail", 2.0)],
              "6.1.150": [regress.Result("a", "ok", "", {"ok": 1}, "pass", 1.0)]}
    root = ET.fromstring(regress.junit(suites))
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == 3
    (failed,) = [c for c in cases if c.find("failure") is not None]
    assert failed.get("name") == "b"
    assert failed.find("failure").get("message") == "expected ok, got KASAN: x (2)"
    assert root.find("./testsuite").get("failures") == "1"


class _Runner:
    """The build's guest stood in for: a planted bug makes the driver's
    programs give a title, as the driver's breakage knobs would."""
    broken = False

    def __init__(self, cfg, log):
        self.life = types.SimpleNamespace(console_log=Path("/vm/console.log"))
        self.cfg = types.SimpleNamespace(op_timeout_ms=5000, program_timeout_ms=20000)
        self.ended = []

    def end_life(self, why):
        self.ended.append(why)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def run(self, program, knobs=None):
        findings = [Finding(title="unbalanced mmu_notifier start/end in check",
                            category="notifier", frame="", report="")] if self.broken else []
        result = protocol.ExecResult(id=1, status=protocol.Status.OK, detail=0, duration_us=1)
        return types.SimpleNamespace(findings=findings, result=result, life=self.life)


def _regress(tmp_path, monkeypatch, *extra):
    monkeypatch.setattr("svmfuzz.regress._run_kernel", lambda args, programs, tree, log: (
        "6.12.118", regress.run_corpus(_Runner(None, log), programs, "6.12.118", log)))
    return cli.main(["regress", "--build-dir", str(build_dir()), "--results",
                     str(tmp_path / "results"), "--junit", str(tmp_path / "junit.xml"),
                     "--only", "boot_smoke,hmm_anon_read", *extra])


def test_a_planted_bug_fails_naming_program_expected_and_got(tmp_path, monkeypatch, capsys):
    _Runner.broken = False
    assert _regress(tmp_path, monkeypatch) == 0
    out = capsys.readouterr().out
    assert "new failures: 0" in out
    _Runner.broken = True
    assert _regress(tmp_path, monkeypatch) == 1
    out = capsys.readouterr().out
    assert ("regress: FAILED 6.12.118: boot_smoke (expected ok, got unbalanced mmu_notifier "
            "start/end in check)") in out
    assert "new failures: 2 (boot_smoke, hmm_anon_read)" in out
    root = ET.parse(tmp_path / "junit.xml").getroot()
    assert len(root.findall("./testsuite/testcase")) == 2
    assert len(root.findall("./testsuite/testcase/failure")) == 2
    page = (tmp_path / "results" / "regress.html").read_text()
    assert "<td class='fail'>unbalanced mmu_notifier start/end in check</td>" in page
    kept = json.loads((tmp_path / "results" / "6.12.118.json").read_text())
    assert {r["program"]: r["status"] for r in kept["results"]} == {
        "boot_smoke": "fail", "hmm_anon_read": "fail"}
    # Fixed again: the comparison with the run before says so.
    _Runner.broken = False
    assert _regress(tmp_path, monkeypatch) == 0
    assert "fixed: 2 (boot_smoke, hmm_anon_read)" in capsys.readouterr().out
