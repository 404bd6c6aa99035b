"""svmfuzz bench: how fast one VM runs programs, and where the time goes.

Boots one guest and prints, all measured in that one life:
- the host<->executor round trip (PING/PONG);
- for each benchmark program, programs per second and the cost of one run
  split into: the ops themselves (the executor's per-op times), the program's
  process around them (fork, setup, exit: the executor's program time less
  its ops), and the host's share (transport, encoding, judging: the host's
  time less the executor's program time);
- each program's rate as a ratio of the empty program's, the floor that the
  executor's fork-per-program design sets.

Programs run with coverage on, as a campaign runs them, and once more without
it for the 10-op driver program, to show what collecting coverage costs. The
empty and the 10-op driver program run once more with their process forked
when the program comes rather than ahead of it, after the last program (the
request flag of docs/executor-protocol.md), and the ratio is printed.

With --reset snapshot it also ends the life a few times and prints the
seconds to a ready executor of a restore against those of the boot.

With --campaign-minutes M it then runs, one after the other, an M-minute
libFuzzer campaign from the seed corpus with each way of reset (reboot, then
snapshot) and prints each one's execs/s, lives and restores, and the ratio.

With --profiles debug,fuzz it then measures the programs' rates once more in
a life of each kernel profile, and with --profile-campaign-minutes M an
M-minute campaign on each, and prints each figure as a ratio to the first
profile's.

With --mutator-minutes M it runs, one after the other, an M-minute libFuzzer
campaign from the seeds with the structured mutator and one with the engine's
byte mutations alone, triages what each saved, and prints the guest PCs each
reached, its execs, and its findings that no known outcome explains.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from svmfuzz import protocol, runner
from svmfuzz.errors import SvmfuzzError
from svmfuzz.vm import config_from_args

PROGRAMS = {
    "empty": "",
    # Ten ops of user memory only: no driver.
    "cpu-10": """
        mmap buf=0 pages=16 kind=anon prot=rw
        write buf=0 off=0 pages=16 seed=1
        mprotect buf=0 off=0 pages=8 prot=r
        read buf=0 off=0 pages=16
        mprotect buf=0 off=0 pages=8 prot=rw
        madvise buf=0 off=8 pages=8 advice=dontneed
        write buf=0 off=8 pages=8 seed=2
        verify buf=0 off=0 pages=8 seed=1
        verify buf=0 off=8 pages=8 seed=2
        munmap buf=0 off=0 pages=16
    """,
    # Ten ops such as a campaign runs: mirror, device access, migration both
    # ways (the CPU faulting pages home), an invalidation.
    "svm-10": """
        mmap buf=0 pages=16 kind=anon prot=rw
        write buf=0 off=0 pages=16 seed=1
        mirror buf=0 off=0 pages=16 write=yes
        dev_read buf=0 off=0 pages=8
        migrate_to_dev buf=0 off=0 pages=8
        dev_write buf=0 off=8 pages=8 seed=2
        verify buf=0 off=0 pages=8 seed=1
        madvise buf=0 off=8 pages=4 advice=dontneed
        migrate_to_sys buf=0 off=0 pages=8
        munmap buf=0 off=0 pages=16
    """,
}


@dataclass
class Figures:
    name: str
    cover: bool
    runs: int
    seconds: float
    host_ms: float     # per program, as the host saw it
    guest_ms: float    # the executor's program time
    ops_ms: float      # the sum of the program's op times

    @property
    def rate(self) -> float:
        return self.runs / self.seconds


def measure(r: runner.Runner, name: str, program: bytes, cover: bool, min_runs: int,
            min_seconds: float, fresh_process: bool = False) -> Figures:
    r.cfg.cover = cover
    r.cfg.fresh_process = fresh_process
    r.run(program)  # warm: the first run of a program faults in what later ones reuse
    host, guest, ops = [], [], []
    start = time.monotonic()
    while len(host) < min_runs or time.monotonic() - start < min_seconds:
        o = r.run(program)
        if o.result is None or o.findings or o.result.status != protocol.Status.OK:
            raise SvmfuzzError(f"bench: {name}: " + "\n".join(runner.describe(o)))
        host.append(o.seconds * 1000)
        guest.append(o.result.duration_us / 1000)
        ops.append(sum(op.duration_us for op in o.result.ops) / 1000)
    r.cfg.fresh_process = False
    return Figures(name + (" fresh" if fresh_process else ""), cover, len(host),
                   time.monotonic() - start, statistics.median(host), statistics.median(guest),
                   statistics.median(ops))


def command(args, log) -> int:
    programs = runner.encode_texts({k: v for k, v in PROGRAMS.items() if v})
    # Every byte string is a program: no bytes, no ops.
    programs = {"empty": b"", **programs}
    cfg = runner.RunnerConfig(config_from_args(args, "executor", log), boot_timeout=args.timeout,
                              reset=runner.reset_mode(args.reset))
    with runner.Runner(cfg, log) as r:
        life = r.boot()
        log(f"bench: executor ready in {life.boot_seconds:.1f} s ({cfg.vm.accel}, "
            f"{cfg.vm.cpus} vCPUs, {cfg.vm.memory})")
        rtts = sorted(r.ping() * 1000 for _ in range(args.pings))
        log(f"bench: host<->executor round trip: best {rtts[0]:.2f} ms, "
            f"median {statistics.median(rtts):.2f} ms over {len(rtts)}")
        figures = [measure(r, name, p, True, args.runs, args.seconds)
                   for name, p in programs.items()]
        figures.append(measure(r, "svm-10", programs["svm-10"], False, args.runs, args.seconds))
        # Today's process forked ahead of its program against one forked when
        # the program comes, in the same life.
        ahead = {f.name: f for f in figures if f.cover}
        fresh = [measure(r, name, programs[name], True, args.runs, args.seconds, True)
                 for name in ("empty", "svm-10")]
        figures += fresh
        resets = measure_resets(r, programs["svm-10"], args.restores) if args.restores else []
    base = figures[0]
    log(f"bench: {'program':<12} {'cover':<5} {'runs':>5} {'prog/s':>7} {'x empty':>7} "
        f"{'host ms':>8} {'ops ms':>7} {'process ms':>10} {'host-side ms':>12}")
    for f in figures:
        log(f"bench: {f.name:<12} {'yes' if f.cover else 'no':<5} {f.runs:>5} {f.rate:>7.1f} "
            f"{f.rate / base.rate:>7.2f} {f.host_ms:>8.1f} {f.ops_ms:>7.1f} "
            f"{f.guest_ms - f.ops_ms:>10.1f} {f.host_ms - f.guest_ms:>12.1f}")
    for f in fresh:
        name = f.name.split()[0]
        log(f"bench: {name}: process forked ahead {ahead[name].rate:.1f} programs/s, forked when "
            f"the program comes {f.rate:.1f}/s: x{ahead[name].rate / f.rate:.2f}")
    if resets:
        restored = [s for kind, s in resets if kind == "restore"]
        booted = [s for kind, s in resets if kind == "boot"]
        line = (f"bench: reset: boot {life.boot_seconds:.1f} s to a ready executor; "
                f"{len(restored)} of {len(resets)} later lives restored")
        if restored:
            median = statistics.median(restored)
            line += f", median {median:.2f} s (x{life.boot_seconds / median:.1f} faster)"
        if booted:
            line += f"; {len(booted)} booted instead, median {statistics.median(booted):.1f} s"
        log(line)
    if args.campaign_minutes > 0:
        rates = {reset: measure_campaign(args, args.campaign_minutes, log, "--reset", reset)
                 for reset in ("reboot", "snapshot")}
        log(f"bench: campaign of {args.campaign_minutes:g} min from the seeds: " + "; ".join(
            f"--reset {reset}: {s['execs']} execs, {s['execs_per_sec']:.2f}/s, {s['lives']} lives "
            f"({s.get('restores', 0)} restored)" for reset, s in rates.items()))
        base = rates["reboot"]["execs_per_sec"]
        if base > 0:
            log(f"bench: campaign execs/s, snapshot against reboot: "
                f"x{rates['snapshot']['execs_per_sec'] / base:.2f}")
    if args.mutator_minutes > 0:
        compare_mutators(args, log)
    if args.profiles:
        compare_profiles(args, programs, log)
    return 0


def compare_profiles(args, programs: dict[str, bytes], log) -> None:
    """Programs/s (with coverage, as campaigns run them) in a life of each
    kernel profile of args.profiles, and each one's campaign execs/s, as
    ratios to the first profile's."""
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    rates: dict[str, dict[str, float]] = {}
    campaigns: dict[str, dict] = {}
    for profile in profiles:
        on_profile = argparse.Namespace(**{**vars(args), "kernel_profile": profile})
        cfg = runner.RunnerConfig(config_from_args(on_profile, "executor", log),
                                  boot_timeout=args.timeout)
        with runner.Runner(cfg, log) as r:
            life = r.boot()
            log(f"bench: {profile} kernel: executor ready in {life.boot_seconds:.1f} s")
            rates[profile] = {name: measure(r, name, p, True, args.runs, args.seconds).rate
                              for name, p in programs.items()}
            rates[profile]["boot s"] = life.boot_seconds
        if args.profile_campaign_minutes > 0:
            campaigns[profile] = measure_campaign(args, args.profile_campaign_minutes, log,
                                                  "--kernel-profile", profile)
    base = profiles[0]
    log(f"bench: {'profile':<8} " + " ".join(f"{n:>14}" for n in rates[base]))
    for profile in profiles:
        log(f"bench: {profile:<8} " + " ".join(
            f"{v:>7.1f} x{v / rates[base][n]:<5.2f}" for n, v in rates[profile].items()))
    if campaigns:
        b = campaigns[base]["execs_per_sec"]
        for profile, s in campaigns.items():
            log(f"bench: {profile} kernel, {args.profile_campaign_minutes:g} min campaign: "
                f"{s['execs']} execs, {s['execs_per_sec']:.2f}/s"
                + (f" (x{s['execs_per_sec'] / b:.2f})" if b > 0 else "")
                + f", {s.get('guest_pcs', 0)} guest PCs, {s['lives']} lives")


def _vm_argv(args) -> list[str]:
    argv = ["--build-dir", args.build_dir, "--accel", args.accel, "--qemu-flavour",
            args.qemu_flavour, "--memory", args.memory, "--cpus", str(args.cpus),
            "--devices", str(args.devices)]
    if args.vram:
        argv += ["--vram", args.vram]
    if args.append:
        argv += ["--append", args.append]
    return argv


def measure_campaign(args, minutes: float, log, *options: str, workdir: Path | None = None,
                     triage: bool = False) -> dict:
    """The stats of a fresh campaign of `minutes` with fuzz `options`, in
    `workdir` (kept) or a temporary directory; with `triage`, also its
    triage's count of unknown findings ("unknown") and headline."""
    from svmfuzz import cli

    with tempfile.TemporaryDirectory(prefix="svmfuzz-bench-") as temp:
        where = Path(workdir or temp)
        rc = cli.main(["fuzz", *_vm_argv(args), "--workdir", str(where), "--minutes",
                       str(minutes), "--progress-seconds", "60", *options])
        stats = where / "stats.json"
        if rc != 0 or not stats.is_file():
            raise SvmfuzzError(f"bench: the campaign with {' '.join(options)} failed ({rc})")
        out = json.loads(stats.read_text())
        if triage:
            if cli.main(["triage", *_vm_argv(args), str(where)]) != 0:
                raise SvmfuzzError(f"bench: the triage of {where} failed")
            report = json.loads((where / "triage.json").read_text())
            out.update(unknown=report["unknown"], headline=report["headline"])
        return out


def compare_mutators(args, log) -> None:
    """Guest PCs after args.mutator_minutes of each mutation, from the same
    seeds, one campaign after the other; each campaign is kept in
    args.campaign_dir/<mutation> when given."""
    figures = {}
    for mutation in ("structured", "bytes"):
        workdir = None
        if args.campaign_dir:
            workdir = Path(args.campaign_dir) / mutation
            if workdir.exists():
                raise SvmfuzzError(f"bench: {workdir} exists; a comparison starts from the seeds")
            workdir.mkdir(parents=True)
        figures[mutation] = measure_campaign(args, args.mutator_minutes, log, "--mutator",
                                             mutation, workdir=workdir, triage=True)
    for mutation, s in figures.items():
        log(f"bench: {args.mutator_minutes:g} min, {mutation} mutation: {s['guest_pcs']} guest "
            f"PCs, {s['execs']} execs ({s['execs_per_sec']:.2f}/s), {s['lives']} lives, "
            f"{s.get('saved', 0)} saved; triage: {s['headline']}")
    base = figures["bytes"]["guest_pcs"]
    if base:
        log(f"bench: guest PCs, structured against bytes: "
            f"x{figures['structured']['guest_pcs'] / base:.2f}")


def measure_resets(r: runner.Runner, program: bytes, count: int) -> list[tuple[str, float]]:
    """Ends the life `count` times and runs a program in the next: each
    next life's seconds to a ready executor, and whether it was restored."""
    out = []
    for i in range(count):
        r.end_life(f"bench: reset {i + 1}")
        o = r.run(program)
        if o.result is None or o.findings or o.result.status != protocol.Status.OK:
            raise SvmfuzzError("bench: after a reset: " + "\n".join(runner.describe(o)))
        out.append(("restore" if o.life.restored else "boot", o.life.boot_seconds))
    return out
