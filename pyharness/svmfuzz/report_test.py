"""svmfuzz report on a campaign directory made here: the page, the summary
and the plots, the page as a headless browser renders it, and bad input."""

import json
import shutil
import subprocess

import pytest

from svmfuzz import cli, report
from svmfuzz.errors import SvmfuzzError

TITLE = "possible deadlock in <svmdev_fence> & co"


def _campaign(tmp_path, triaged=True):
    work = tmp_path / "campaign"
    crashes = work / "crashes"
    crashes.mkdir(parents=True)
    (work / "campaign.conf").write_text("engine = libfuzzer\n")
    (work / "stats.json").write_text(json.dumps(
        {"engine": "libfuzzer", "execs": 30, "execs_per_sec": 0.5, "guest_pcs": 900, "lives": 2,
         "restores": 1, "reboots": 0, "findings": 1, "saved": 1}))
    rows = [{"updated": 1000 + 30 * i, "execs": 10 * i, "guest_pcs": 100 * i} for i in range(4)]
    # The last line was cut short by a kill.
    (work / "stats-history.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + '{"updated": 11')
    (crashes / "crash-1").write_bytes(b"\0")
    (crashes / "crash-1.txt").write_text(
        "kind: x\nwhy: kernel: WARNING: possible circular locking\n"
        "--- console while it ran ---\n[ 1.0] console line <b>\n")
    (crashes / "crash-1.min.svmp").write_text("drop_acks count=1\n")
    (crashes / "crash-1.c").write_text("int main(void) { return 0; }\n")
    if triaged:
        crash = {"input": str(crashes / "crash-1"), "runs": 3, "reproduced": 2,
                 "titles": {TITLE: 2}, "console_log": "", "program": "mmap\ndrop_acks count=1\n",
                 "why": [], "report": "  svmdev_fence+0x1/0x10 [svmdev]\n      at svmdev_fence "
                 "guest-driver/svmdev_main.c:42\n",
                 "minimized": str(crashes / "crash-1.min.svmp"), "minimized_ops": 1,
                 "reproducer": str(crashes / "crash-1.c")}
        (work / "triage.json").write_text(json.dumps(
            {"dir": str(work), "repeat": 3, "headline": "1 unknown finding(s), 0 known",
             "unknown": 1, "buckets": [{"title": TITLE, "known": "", "crashes": [crash]}],
             "skipped": []}))
    return work


def test_history_skips_a_line_cut_short(tmp_path):
    work = _campaign(tmp_path)
    history = report.load_history(work / "stats-history.jsonl")
    assert [r["execs"] for r in history] == [0, 10, 20, 30]
    minutes, pcs, rates = report._series(history)
    assert minutes == [0, 0.5, 1.0, 1.5] and pcs[-1] == 300
    assert rates == [0.0] + [10 / 30] * 3


def test_page_summary_and_plots_of_a_triaged_campaign(tmp_path):
    work = _campaign(tmp_path)
    assert cli.main(["report", str(work)]) == 0
    out = work / "report"
    for png in ("coverage.png", "execs.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "summary.md").read_text()
    assert f"| {TITLE} |  | 1 | 2/3 |" in md
    assert "Program (minimized):\n\n```\ndrop_acks count=1\n```" in md
    assert "guest-driver/svmdev_main.c:42" in md
    page = (out / "index.html").read_text()
    # Everything from the guest is escaped.
    assert "possible deadlock in &lt;svmdev_fence&gt; &amp; co" in page
    assert "console line &lt;b&gt;" in page and "<b>" not in page
    assert "<img src='coverage.png'" in page and "int main(void)" in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_the_page_renders_in_a_headless_browser(tmp_path):
    work = _campaign(tmp_path)
    index = report.write(work, tmp_path / "out")
    shot = tmp_path / "shot.png"
    argv = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*argv, "--dump-dom", index.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert "<h2 id=\"headline\">1 unknown finding(s), 0 known</h2>" in dom, dom[:2000]
    assert "possible deadlock in &lt;svmdev_fence&gt; &amp; co" in dom
    subprocess.run([*argv, f"--screenshot={shot}", "--window-size=1000,1400", index.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10000


def test_an_untriaged_campaign_lists_its_saved_inputs(tmp_path):
    work = _campaign(tmp_path, triaged=False)
    report.write(work, work / "report")
    md = (work / "report" / "summary.md").read_text()
    assert f"Not triaged yet: `./svmfuzz triage {work}`." in md
    assert "- `crash-1`: kernel: WARNING: possible circular locking" in md


def test_bad_input_is_a_clear_error_and_changes_nothing(tmp_path):
    (tmp_path / "stray").write_text("x")
    with pytest.raises(SvmfuzzError, match="is not a campaign directory"):
        report.write(tmp_path, tmp_path / "report")
    assert [p.name for p in tmp_path.iterdir()] == ["stray"]
    with pytest.raises(SvmfuzzError, match="no such directory"):
        report.write(tmp_path / "missing", tmp_path / "report")
    work = _campaign(tmp_path)
    (work / "triage.json").write_text("{not json")
    before = sorted(p.name for p in work.iterdir())
    with pytest.raises(SvmfuzzError, match="triage.json is malformed"):
        report.write(work, work / "report")
    assert sorted(p.name for p in work.iterdir()) == before
