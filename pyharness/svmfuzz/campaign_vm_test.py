"""Campaigns against the real guest: libFuzzer (and AFL++ when it is
installed) must run programs, learn from the guest's coverage and keep their
state; triage must title a real finding and say how often it reproduces.

The build directory (SVMFUZZ_BUILD) gives the harnesses and the runner
module; its artifacts/ the guest.
"""

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from svmfuzz import campaign, cli, minimize, runner
from svmfuzz.report import load_history
from svmfuzz.paths import build_dir

pytestmark = pytest.mark.vm

MINUTES = float(os.environ.get("SVMFUZZ_CAMPAIGN_MINUTES", "3"))
# Under TCG a guest boots in under a minute and runs a few programs a second.
MIN_EXECS = 10
MIN_GUEST_PCS = 2000
# A device that drops the acknowledgement of the unmap's invalidation, with
# the driver's break_fence_wait knob (campaign.conf's knobs): the driver waits
# for that fence for ever, where SIGKILL cannot end it. Without the knob it
# restarts the device's rings and goes on. The yield and the sleep are there
# for the minimizer to drop.
LOST_ACK = """
    mmap buf=0 pages=4 kind=anon prot=rw
    write buf=0 off=0 pages=4 seed=1
    yield
    mirror buf=0 off=0 pages=4 write=no
    drop_acks count=1
    sleep us=1000
    munmap buf=0 off=0 pages=4
"""
REPEAT = 2


def _fuzz(engine: str, workdir: Path) -> int:
    return cli.main(["fuzz", "--build-dir", str(build_dir()), "--engine", engine,
                     "--minutes", str(MINUTES), "--accel", "tcg", "--workdir", str(workdir),
                     "--progress-seconds", "15"])


def _seeds() -> int:
    return len(list(campaign.SEEDS.glob("*.svmp")))


def test_libfuzzer_campaign_then_triage_of_a_planted_finding(guest_artifacts, tmp_path,
                                                              capsys):
    work = tmp_path / "libfuzzer"
    assert _fuzz("libfuzzer", work) == 0
    out = capsys.readouterr().out
    print(out)
    stats = json.loads((work / "stats.json").read_text())
    assert stats["execs"] >= MIN_EXECS, stats
    assert stats["guest_pcs"] >= MIN_GUEST_PCS, stats
    assert stats["lives"] >= 1
    assert len(campaign.corpus_files(work / "corpus")) > _seeds()
    assert "fuzz: done after" in out

    # A finding as a campaign saves it, next to the campaign's configuration.
    planted = tmp_path / "planted"
    (planted / "crashes").mkdir(parents=True)
    shutil.copy(work / "campaign.conf", planted / "campaign.conf")
    with open(planted / "campaign.conf", "a") as conf:
        conf.write("knobs = break_fence_wait=1\n")
    program = runner.encode_texts({"lost_ack": LOST_ACK})["lost_ack"]
    (planted / "crashes" / "crash-lost-ack").write_bytes(program)
    (planted / "crashes" / "crash-empty").write_bytes(b"")
    assert cli.main(["triage", str(planted), "--build-dir", str(build_dir()), "--accel", "tcg",
                     "--repeat", str(REPEAT)]) == 0
    print(capsys.readouterr().out)
    report = json.loads((planted / "triage.json").read_text())
    assert [s["input"] for s in report["skipped"]] == [str(planted / "crashes" / "crash-empty")]
    (bucket,) = report["buckets"]
    assert bucket["title"].startswith("INFO: task hung in svmdev_"), bucket["title"]
    (crash,) = bucket["crashes"]
    assert (crash["reproduced"], crash["runs"]) == (REPEAT, REPEAT)
    assert "drop_acks count=1" in crash["program"]
    assert Path(crash["console_log"]).is_file()
    assert bucket["title"] in (planted / "triage.txt").read_text()
    assert report["unknown"] == 1 and not bucket["known"]
    # Minimized: shorter, and it gave the title in every run of every step kept.
    minimized = Path(crash["minimized"]).read_text()
    assert crash["minimized_ops"] < len(minimize.ops(LOST_ACK)), minimized
    assert "drop_acks" in minimized and "yield" not in minimized, minimized
    assert "drop_acks" in Path(crash["reproducer"]).read_text()
    # The report's frames have their source lines.
    assert re.search(r"\n\s+at svmdev_\w+ guest-driver/svmdev_\w+\.c:\d+", crash["report"]), \
        crash["report"]
    # And the page of it all.
    assert cli.main(["report", str(planted)]) == 0
    page = (planted / "report" / "index.html").read_text()
    assert bucket["title"] in page and "drop_acks count=1" in page
    # The campaign's own page has its plots over time.
    assert cli.main(["report", str(work)]) == 0
    assert len(load_history(work / "stats-history.jsonl")) >= 2


@pytest.mark.skipif(shutil.which("afl-fuzz") is None, reason="afl-fuzz is not installed")
def test_afl_campaign_runs_on_guest_coverage(guest_artifacts, tmp_path, capsys):
    if not (build_dir() / "fuzz" / "campaign" / campaign.HARNESS["afl"]).is_file():
        pytest.skip("the AFL++ harness is not built")
    work = tmp_path / "afl"
    assert _fuzz("afl", work) == 0
    print(capsys.readouterr().out)
    afl = campaign.parse_afl_stats((work / "afl" / "default" / "fuzzer_stats").read_text())
    # Every seed went through the guest, in the persistent child's VM.
    assert int(afl["execs_done"]) >= _seeds(), afl
    stats = json.loads((work / "stats.json").read_text())
    assert stats["execs"] >= _seeds() and stats["guest_pcs"] >= MIN_GUEST_PCS, stats
