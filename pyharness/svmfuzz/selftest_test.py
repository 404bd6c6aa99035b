import pytest

from svmfuzz import selftest
from svmfuzz.errors import SvmfuzzError

CONSOLE = """\
[    9.1][    T1] svmfuzz-init: kernel 6.12.117, 2 cpus, running hmm-tests
svmfuzz-hmm-tests: begin
TAP version 13
1..4
# Starting 4 tests from 2 test cases.
#  RUN           hmm.hmm_device_private.open_close ...
#            OK  hmm.hmm_device_private.open_close
ok 1 hmm.hmm_device_private.open_close
#  RUN           hmm.hmm_device_private.anon_write ...
# hmm-tests.c:321:anon_write:Expected ret (-16) == 0 (0)
[   10.2][  T88] some kernel line in between
# anon_write: Test terminated by assertion
#          FAIL  hmm.hmm_device_private.anon_write
not ok 2 hmm.hmm_device_private.anon_write
#  RUN           hmm.hmm_device_private.hugetlbfs ...
#      SKIP      no huge pages
ok 3 hmm.hmm_device_private.hugetlbfs # SKIP no huge pages
#  RUN           hmm2.hmm2_device_private.migrate_mixed ...
ok 4 hmm2.hmm2_device_private.migrate_mixed
# FAILED: 2 / 4 tests passed.
svmfuzz-hmm-tests: end rc=1
"""


def test_parse_console_records_every_test():
    r = selftest.parse_console(CONSOLE)
    assert r.planned == 4 and r.exit_code == 1
    assert [(t.name.split(".")[-1], t.status) for t in r.tests] == [
        ("open_close", "pass"), ("anon_write", "fail"), ("hugetlbfs", "skip"),
        ("migrate_mixed", "pass")]
    fail = r.tests[1]
    assert "Expected ret (-16) == 0" in fail.reason
    assert r.tests[2].reason == "no huge pages"
    assert r.counts() == {"pass": 2, "fail": 1, "skip": 1}


def test_missing_start_is_an_error():
    with pytest.raises(SvmfuzzError, match="never started"):
        selftest.parse_console("Kernel panic - not syncing\n")


def test_compare_flags_new_and_fixed_failures(tmp_path):
    r = selftest.parse_console(CONSOLE)
    known = tmp_path / "known"
    known.write_text("# why each one fails\n"
                     "hmm.hmm_device_private.anon_write fail needs -EBUSY retry\n"
                     "hmm.hmm_device_private.hugetlbfs skip no hugetlb pool\n")
    assert selftest.compare(r, selftest.load_expectations(known)) == []
    known.write_text("hmm.hmm_device_private.hugetlbfs skip no pool\n"
                     "hmm2.hmm2_device_private.migrate_mixed fail was broken\n")
    problems = selftest.compare(r, selftest.load_expectations(known))
    assert any("anon_write: fail, expected pass" in p for p in problems)
    assert any("migrate_mixed: pass, expected fail" in p for p in problems)


def test_wildcards_cover_families(tmp_path):
    r = selftest.parse_console(CONSOLE)
    known = tmp_path / "known"
    known.write_text("hmm.*.anon_write fail known\nhmm.*.hugetlb* skip no pool\n"
                     "hmm.*.nothing_like_this fail stale entry\n")
    assert selftest.compare(r, selftest.load_expectations(known)) == [
        "hmm.*.nothing_like_this: listed in the expectations but no such test ran"]


def test_a_flaky_test_may_pass_or_fail_but_not_skip(tmp_path):
    r = selftest.parse_console(CONSOLE)
    known = tmp_path / "known"
    known.write_text("hmm.*.anon_write flaky a race the kernel leaves open\n"
                     "hmm2.*.migrate_mixed flaky the same race\n"
                     "hmm.*.hugetlb* flaky no pool today\n")
    assert selftest.compare(r, selftest.load_expectations(known)) == [
        "hmm.hmm_device_private.hugetlbfs: skip, expected flaky (no huge pages)"]


def test_truncated_run_is_reported():
    cut = CONSOLE.split("#  RUN           hmm2")[0]
    problems = selftest.compare(selftest.parse_console(cut), {})
    assert any("did not finish" in p for p in problems)


def test_malformed_expectations_name_the_line(tmp_path):
    bad = tmp_path / "known"
    bad.write_text("ok.line fail reason\nbroken-line\n")
    with pytest.raises(SvmfuzzError, match=":2:"):
        selftest.load_expectations(bad)
