"""svmfuzz regress in the real guest: the corpus passes on the build's kernel,
and a planted driver bug fails it, naming the program, what it expected and
what it got, in the table, the exit code and the JUnit file."""

import xml.etree.ElementTree as ET

import pytest

from svmfuzz import cli
from svmfuzz.paths import build_dir

pytestmark = pytest.mark.vm


def _regress(tmp_path, *extra) -> int:
    return cli.main(["regress", "--build-dir", str(build_dir()), "--accel", "tcg",
                     "--results", str(tmp_path / "results"), "--junit",
                     str(tmp_path / "junit.xml"), *extra])


def test_the_corpus_passes_on_the_builds_kernel(guest_artifacts, tmp_path, capsys):
    assert _regress(tmp_path) == 0
    out = capsys.readouterr().out
    print(out)
    assert "FAILED" not in out
    cases = ET.parse(tmp_path / "junit.xml").getroot().findall("./testsuite/testcase")
    assert len(cases) >= 40


def test_a_planted_driver_bug_fails_naming_program_and_outcomes(guest_artifacts, tmp_path,
                                                                capsys):
    # The driver counts an invalidate_range_start twice: its balance check fires.
    assert _regress(tmp_path, "--only", "boot_smoke,hmm_anon_read",
                    "--knobs", "break_imbalance=1") == 1
    out = capsys.readouterr().out
    print(out)
    assert "regress: FAILED" in out and "boot_smoke (expected ok, got unbalanced mmu_notifier" in out
    root = ET.parse(tmp_path / "junit.xml").getroot()
    failures = root.findall("./testsuite/testcase/failure")
    assert failures and failures[0].get("message").startswith("expected ok, got unbalanced")
