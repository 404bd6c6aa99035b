"""`svmfuzz report DIR`: a campaign as a static HTML page and a Markdown
summary, in DIR/report/ (or -o OUT).

They show the campaign's figures (stats.json), plots of guest PCs and
execs/s over time (stats-history.jsonl), and, from triage (triage.json),
each bucket: its title and whether a known outcome explains it, how often it
reproduced, its minimized program and C reproducer, its symbolized report
and an excerpt of the console. A campaign not triaged yet gets its saved
inputs listed with what the campaign saw, and the command to triage it.
Nothing in DIR but the output directory is written.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

from svmfuzz import campaign
from svmfuzz.errors import SvmfuzzError

CONSOLE_LINES = 60


def load_history(path: Path) -> list[dict]:
    """The stats lines in time order; a line a kill cut short is skipped."""
    out = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("updated"), (int, float)):
            out.append(row)
    return sorted(out, key=lambda r: r["updated"])


def _series(history: list[dict]) -> tuple[list[float], list[int], list[float]]:
    """Minutes since the first line, guest PCs, and execs/s between lines."""
    if not history:
        return [], [], []
    t0 = history[0]["updated"]
    minutes = [(r["updated"] - t0) / 60 for r in history]
    pcs = [int(r.get("guest_pcs", 0)) for r in history]
    rates = [0.0]
    for a, b in zip(history, history[1:]):
        dt = b["updated"] - a["updated"]
        # A resumed campaign counts on; a later session never counts less.
        rates.append(max(0, b.get("execs", 0) - a.get("execs", 0)) / dt if dt > 0 else 0.0)
    return minutes, pcs, rates


def plot(history: list[dict], out: Path) -> list[str]:
    """coverage.png and execs.png in `out`; the names written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes, pcs, rates = _series(history)
    written = []
    for name, ys, label in (("coverage.png", pcs, "guest PCs"), ("execs.png", rates, "execs/s")):
        fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
        ax.plot(minutes, ys, marker="." if len(ys) < 50 else None)
        ax.set_xlabel("minutes")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if not ys:
            ax.text(0.5, 0.5, "no history yet", ha="center", va="center", transform=ax.transAxes)
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)
        written.append(name)
    return written


def _console_excerpt(crash: dict) -> str:
    """What the console printed while the input ran, as the campaign saved it."""
    saved = Path(crash["input"] + ".txt")
    try:
        text = saved.read_text(errors="replace")
    except OSError:
        return ""
    _, sep, console = text.partition("--- console while it ran ---\n")
    lines = console.splitlines() if sep else []
    return "\n".join(lines[:CONSOLE_LINES]) + ("\n..." if len(lines) > CONSOLE_LINES else "")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace") if path else ""
    except OSError:
        return ""


def _reliability(b: dict, repeat: int) -> str:
    best = max((c["reproduced"] for c in b["crashes"]), default=0)
    return f"{best}/{repeat}"


def collect(workdir: Path) -> dict:
    """Everything the page shows, or SvmfuzzError when DIR is no campaign."""
    if not workdir.is_dir():
        raise SvmfuzzError(f"{workdir}: no such directory")
    if not (workdir / "campaign.conf").is_file() and not (workdir / "stats.json").is_file():
        raise SvmfuzzError(f"{workdir} is not a campaign directory (no campaign.conf or "
                           "stats.json): give the --workdir of svmfuzz fuzz")
    stats = campaign.read_stats(workdir)
    triage = None
    if (workdir / "triage.json").is_file():
        try:
            triage = json.loads((workdir / "triage.json").read_text())
        except ValueError as e:
            raise SvmfuzzError(f"{workdir / 'triage.json'} is malformed: {e}") from e
    saved = [{"input": str(p), "why": campaign._campaign_saw(p.with_name(p.name + ".txt"))}
             for p in campaign.saved_inputs(workdir / "crashes")]
    return {"dir": str(workdir), "conf": campaign.read_config(workdir / "campaign.conf"),
            "stats": stats, "history": load_history(workdir / "stats-history.jsonl"),
            "triage": triage, "saved": saved}


def markdown(data: dict) -> str:
    s, t = data["stats"], data["triage"]
    lines = [f"# svmfuzz campaign: {data['dir']}", ""]
    lines += [f"- engine: {s.get('engine', data['conf'].get('engine', '?'))}",
              f"- execs: {s.get('execs', 0)} ({s.get('execs_per_sec', 0)}/s in the last session)",
              f"- guest PCs: {s.get('guest_pcs', 0)}",
              f"- VM lives: {s.get('lives', 0)} ({s.get('restores', 0)} restored from the "
              f"snapshot, {s.get('reboots', 0)} booted)",
              f"- findings: {s.get('findings', 0)} ({s.get('saved', 0)} saved)", ""]
    if t is None:
        lines += [f"Not triaged yet: `./svmfuzz triage {data['dir']}`.", ""]
        lines += [f"- `{Path(x['input']).name}`: {x['why'][0] if x['why'] else '?'}"
                  for x in data["saved"]]
        return "\n".join(lines) + "\n"
    lines += [f"**{t['headline']}**", "", "| title | known | inputs | reproduced |",
              "|---|---|---|---|"]
    for b in t["buckets"]:
        lines.append(f"| {b['title']} | {b['known'] or ''} | {len(b['crashes'])} | "
                     f"{_reliability(b, t['repeat'])} |")
    for b in t["buckets"]:
        if b["title"] == campaign.NO_FINDING:
            continue
        lines += ["", f"## {b['title']}", ""]
        if b["known"]:
            lines += [f"Known: {b['known']}", ""]
        best = max(b["crashes"], key=lambda c: c["reproduced"])
        lines += [f"Input `{best['input']}`, reproduced {best['reproduced']}/{best['runs']}."]
        program = _read(best.get("minimized", "")) or best["program"]
        lines += ["", "Program" + (" (minimized):" if best.get("minimized") else ":"), "",
                  "```", program.rstrip(), "```"]
        if best.get("reproducer"):
            lines += ["", f"C reproducer: `{best['reproducer']}`"]
        if best.get("report"):
            lines += ["", "Report:", "", "```", best["report"].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text.rstrip())}</pre>" if text.strip() else ""


def page(data: dict, images: list[str]) -> str:
    s, t = data["stats"], data["triage"]
    e = html.escape
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
           f"<title>svmfuzz campaign {e(data['dir'])}</title>",
           "<style>body{font-family:sans-serif;max-width:70em;margin:1em auto}"
           "pre{background:#f4f4f4;padding:.5em;overflow-x:auto;font-size:85%}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em}"
           ".known{color:#666}</style></head><body>",
           f"<h1>svmfuzz campaign</h1><p><code>{e(data['dir'])}</code>, "
           f"{e(time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))}</p>",
           "<table id='stats'>"]
    for key in ("engine", "execs", "execs_per_sec", "guest_pcs", "lives", "restores", "reboots",
                "findings", "saved", "boot_failures"):
        out.append(f"<tr><th>{e(key)}</th><td>{e(str(s.get(key, '')))}</td></tr>")
    out.append("</table>")
    out += [f"<img src='{e(name)}' alt='{e(name)}'>" for name in images]
    if t is None:
        out.append(f"<h2>Not triaged yet</h2><p>Run <code>./svmfuzz triage {e(data['dir'])}"
                   "</code>.</p><ul>")
        out += [f"<li><code>{e(Path(x['input']).name)}</code>: "
                f"{e(x['why'][0] if x['why'] else '?')}</li>" for x in data["saved"]]
        out.append("</ul></body></html>")
        return "\n".join(out) + "\n"
    out += [f"<h2 id='headline'>{e(t['headline'])}</h2>",
            "<table id='buckets'><tr><th>title</th><th>known</th><th>inputs</th>"
            "<th>reproduced</th></tr>"]
    for n, b in enumerate(t["buckets"]):
        out.append(f"<tr class='{'known' if b['known'] else 'unknown'}'>"
                   f"<td><a href='#b{n}'>{e(b['title'])}</a></td><td>{e(b['known'] or '')}</td>"
                   f"<td>{len(b['crashes'])}</td><td>{_reliability(b, t['repeat'])}</td></tr>")
    out.append("</table>")
    for n, b in enumerate(t["buckets"]):
        if b["title"] == campaign.NO_FINDING:
            continue
        best = max(b["crashes"], key=lambda c: c["reproduced"])
        out.append(f"<h2 id='b{n}'>{e(b['title'])}</h2>")
        if b["known"]:
            out.append(f"<p class='known'>Known: {e(b['known'])}</p>")
        out.append(f"<p>Input <code>{e(best['input'])}</code>, reproduced "
                   f"{best['reproduced']}/{best['runs']}"
                   + "".join(f"; also <code>{e(Path(c['input']).name)}</code>"
                             for c in b["crashes"] if c is not best) + ".</p>")
        minimized = _read(best.get("minimized", ""))
        out.append("<h3>Program" + (" (minimized)" if minimized else "") + "</h3>"
                   + _pre(minimized or best["program"]))
        if best.get("reproducer"):
            source = _read(best["reproducer"])
            out.append("<h3>C reproducer</h3>" + (
                f"<p><code>{e(best['reproducer'])}</code>: <code>gcc -static -pthread -O1</code>"
                "</p><details><summary>source</summary>" + _pre(source) + "</details>"
                if source else f"<p>{e(best['reproducer'])}</p>"))
        if best.get("report"):
            out.append("<h3>Report</h3>" + _pre(best["report"]))
        console = _console_excerpt(best)
        if console:
            out.append("<h3>Console</h3>" + _pre(console))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write(workdir: Path, out: Path) -> Path:
    data = collect(workdir)
    out.mkdir(parents=True, exist_ok=True)
    images = plot(data["history"], out)
    campaign.write_atomic(out / "summary.md", markdown(data))
    campaign.write_atomic(out / "index.html", page(data, images))
    return out / "index.html"


def command(args, log) -> int:
    workdir = Path(args.dir).resolve()
    out = Path(args.output).resolve() if args.output else workdir / "report"
    index = write(workdir, out)
    log(f"report: {index} and {out / 'summary.md'}")
    return 0
