"""The svmfuzz command line."""

import argparse
import os
import signal
import sys
from pathlib import Path

from svmfuzz import known, native
from svmfuzz.errors import SvmfuzzError
from svmfuzz.paths import REPO_ROOT, build_dir


def log(msg: str) -> None:
    print(msg, flush=True)


def _cmd_build(args: argparse.Namespace) -> int:
    from svmfuzz.artifacts import cache, image, kernel, module, qemu

    build = Path(args.build_dir)
    if args.what == "qemu":
        out = qemu.build(args.flavour, Path(args.core_lib), args.qemu_src or None, log)
        cache.link_artifact(f"qemu-{args.flavour}", out, build)
    elif args.what == "kernel":
        out = kernel.build(args.kernel_src or None, log)
        cache.link_artifact("kernel", out, build)
    elif args.what == "module":
        out = module.build(_required_artifact("kernel", build), log)
        cache.link_artifact("module", out, build)
    elif args.what == "initramfs":
        out = image.build(_required_artifact("kernel", build), _required_artifact("module", build),
                          Path(args.executor), log)
        cache.link_artifact("initramfs", out, build)
    return 0


def _required_artifact(name: str, build: Path) -> Path:
    from svmfuzz.artifacts import cache

    found = cache.linked_artifact(name, build)
    if found is None:
        raise SvmfuzzError(f"no {name} artifact under {build}/artifacts: "
                           f"build it first (cmake --build {build})")
    return found


def _cmd_boot(args: argparse.Namespace) -> int:
    if args.shell:
        from svmfuzz import vm

        return vm.shell_command(args, log)
    from svmfuzz import runner

    return runner.boot_command(args, log)


def _cmd_selftest(args: argparse.Namespace) -> int:
    from svmfuzz import selftest

    return selftest.command(args, log)


def _cmd_run(args: argparse.Namespace) -> int:
    from svmfuzz import runner

    return runner.run_command(args, log)


def _cmd_bench(args: argparse.Namespace) -> int:
    from svmfuzz import bench

    return bench.command(args, log)


def _cmd_fuzz(args: argparse.Namespace) -> int:
    from svmfuzz import campaign

    return campaign.fuzz_command(args, log)


def _cmd_triage(args: argparse.Namespace) -> int:
    from svmfuzz import campaign

    return campaign.triage_command(args, log)


def _cmd_prog2c(args: argparse.Namespace) -> int:
    from svmfuzz import repro

    return repro.prog2c_command(args, log)


def _cmd_symbolize(args: argparse.Namespace) -> int:
    from svmfuzz import symbolize

    return symbolize.command(args, log)


def _cmd_regress(args: argparse.Namespace) -> int:
    from svmfuzz import regress

    return regress.command(args, log)


def _cmd_report(args: argparse.Namespace) -> int:
    from svmfuzz import report

    return report.command(args, log)


def _cmd_minimize(args: argparse.Namespace) -> int:
    from svmfuzz import minimize

    return minimize.command(args, log)


def _cmd_repro(args: argparse.Namespace) -> int:
    from svmfuzz import repro

    return repro.repro_command(args, log)


def _add_vm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--build-dir", default=str(build_dir()),
                   help="CMake build directory holding artifacts/ (default: %(default)s)")
    p.add_argument("--devices", type=int, default=1, help="number of svmdev devices")
    p.add_argument("--vram", default="",
                   help="each device's VRAM, e.g. 16M: a small one makes migrations evict "
                        "(default: the device's 256M)")
    p.add_argument("--accel", choices=["auto", "tcg", "kvm"], default="auto",
                   help="auto: KVM only if a short probe boot succeeds, else TCG")
    p.add_argument("--qemu-flavour", choices=["release", "asan"], default="release")
    p.add_argument("--kernel-profile", choices=["debug", "fuzz"], default="debug",
                   help="debug: KCOV over the whole kernel, as the tests run it; fuzz: KCOV "
                        "only in mm/ and the driver, without comparisons (built on first use; "
                        "the default of fuzz, the debug one elsewhere)")
    p.add_argument("--memory", default="2G", help="guest memory (default: %(default)s)")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--timeout", type=float, default=300,
                   help="seconds to wait for the guest (default: %(default)s)")
    p.add_argument("--workdir", help="where console logs go (default: <build-dir>/vm)")
    p.add_argument("--append", default="", help="extra kernel command-line arguments")


def _add_reset_option(p: argparse.ArgumentParser) -> None:
    from svmfuzz.runner import RESETS

    p.add_argument("--reset", choices=RESETS, default="snapshot",
                   help="after a kernel report, a lost executor or a stuck task: restore the "
                        "snapshot taken once the first boot was ready, or boot again; a restore "
                        "that fails boots (default: %(default)s)")


KNOBS_HELP = ("test-only driver knobs, as campaign.conf writes them (\"break_imbalance=1 "
              "...\"); default: the campaign's, for an input in DIR/crashes")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="svmfuzz", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build one external artifact (CMake calls these)")
    b.add_argument("what", choices=["qemu", "kernel", "module", "initramfs"])
    b.add_argument("--build-dir", default=str(build_dir()))
    b.add_argument("--flavour", default="release", help="QEMU flavour: release or asan")
    b.add_argument("--core-lib", help="device core static library to link into QEMU")
    b.add_argument("--executor", help="executor binary for the initramfs")
    b.add_argument("--kernel-src", default=os.environ.get("KERNEL_SRC", ""))
    b.add_argument("--qemu-src", default=os.environ.get("QEMU_SRC", ""))
    b.set_defaults(func=_cmd_build)

    boot = sub.add_parser("boot", help="boot the guest with svmdev devices to a ready executor")
    _add_vm_options(boot)
    boot.add_argument("--shell", action="store_true", help="interactive console instead")
    boot.set_defaults(func=_cmd_boot)

    st = sub.add_parser("selftest", help="run the kernel's hmm-tests in the guest")
    _add_vm_options(st)
    st.add_argument("--driver", choices=["test_hmm", "svmdev"], default="test_hmm",
                    help="which driver backs /dev/hmm_dmirror* (default: %(default)s)")
    st.add_argument("--results", help="JSON results file (default: <workdir>/hmm-tests.json)")
    st.add_argument("--expect", help="file of expected failures to check the results against")
    st.set_defaults(func=_cmd_selftest)

    run = sub.add_parser("run", help="run text programs (.svmp) in the guest and show the results")
    _add_vm_options(run)
    _add_reset_option(run)
    run.add_argument("programs", nargs="+", help="program files in the text form")
    run.add_argument("--repeat", type=int, default=1, help="runs of each program")
    run.add_argument("--op-timeout-ms", type=int, default=5000)
    run.add_argument("--program-timeout-ms", type=int, default=20000)
    run.set_defaults(func=_cmd_run)

    bench = sub.add_parser("bench", help="programs per second of one VM, and where the time goes")
    _add_vm_options(bench)
    _add_reset_option(bench)
    bench.add_argument("--runs", type=int, default=30, help="at least this many runs a program")
    bench.add_argument("--seconds", type=float, default=10, help="and at least this long")
    bench.add_argument("--pings", type=int, default=50, help="round trips to time")
    bench.add_argument("--restores", type=int, default=3,
                       help="lives ended to time what comes next (default: %(default)s)")
    bench.add_argument("--campaign-minutes", type=float, default=0,
                       help="then a campaign of this long with each --reset, one after the "
                            "other, to compare their execs/s (default: none)")
    bench.add_argument("--mutator-minutes", type=float, default=0,
                       help="then a campaign of this long with each --mutator, one after the "
                            "other, to compare the guest PCs they reach, each triaged "
                            "(default: none)")
    bench.add_argument("--profiles", default="",
                       help="then, for each kernel profile of this list (debug,fuzz), the "
                            "programs/s of the benchmark programs in a life of its own, and "
                            "with --profile-campaign-minutes a campaign on it (default: none)")
    bench.add_argument("--profile-campaign-minutes", type=float, default=0,
                       help="the campaign of each of --profiles, one after the other")
    bench.add_argument("--campaign-dir", default="",
                       help="keep those campaigns in DIR/structured and DIR/bytes "
                            "(default: temporary)")
    bench.set_defaults(func=_cmd_bench)

    fz = sub.add_parser("fuzz", help="a coverage-guided campaign against the guest (libFuzzer or AFL++)")
    _add_vm_options(fz)
    _add_reset_option(fz)
    fz.add_argument("--engine", choices=["libfuzzer", "afl"], default="libfuzzer")
    # Measured by bench --profiles: x2.3 programs/s and x1.7 campaign execs/s.
    fz.set_defaults(kernel_profile="fuzz")
    fz.add_argument("--minutes", type=float, default=10, help="how long (default: %(default)s)")
    fz.add_argument("--seeds", default=str(REPO_ROOT / "corpus" / "programs"),
                    help="text programs (*.svmp) a new campaign starts from")
    fz.add_argument("--progress-seconds", type=float, default=10,
                    help="seconds between progress lines (default: %(default)s)")
    fz.add_argument("--mutator", choices=["structured", "bytes"], default="structured",
                    help="structured: programs mutated as programs, beside the engine's byte "
                         "mutations; bytes: the engine's byte mutations alone, a baseline "
                         "(default: %(default)s)")
    fz.add_argument("--knobs", default="", help=KNOBS_HELP.split(";")[0] + ", for every "
                    "program: a campaign against a planted driver bug")
    fz.add_argument("--op-timeout-ms", type=int, default=5000)
    fz.add_argument("--program-timeout-ms", type=int, default=20000)
    fz.set_defaults(func=_cmd_fuzz)

    tr = sub.add_parser("triage", help="run a campaign's saved inputs again and bucket them by title")
    _add_vm_options(tr)
    _add_reset_option(tr)
    tr.add_argument("dir", help="the campaign directory (svmfuzz fuzz --workdir)")
    tr.add_argument("--repeat", type=int, default=3, help="runs of each input (default: %(default)s)")
    tr.add_argument("--op-timeout-ms", type=int, default=5000,
                    help="when the campaign's own is not known")
    tr.add_argument("--program-timeout-ms", type=int, default=20000,
                    help="when the campaign's own is not known")
    tr.add_argument("--known", default=str(known.DEFAULT),
                    help="known outcomes: titles expected on a correct kernel, with their "
                         "reasons (default: %(default)s)")
    tr.add_argument("--minimize-steps", type=int, default=100,
                    help="minimize the best input of each bucket no known outcome explains, "
                         "with at most this many steps in the guest, and write it as C; 0: "
                         "do not (default: %(default)s)")
    tr.set_defaults(func=_cmd_triage)

    pc = sub.add_parser("prog2c", help="a program (.svmp) or saved input as a standalone C "
                                       "reproducer for the guest")
    pc.add_argument("program", help="a text program (.svmp) or a fuzzer input")
    pc.add_argument("-o", "--output", help="the C file (default: standard output)")
    pc.add_argument("--target", choices=["svmdev", "test_hmm"], default="svmdev",
                    help="the driver's ioctls, or the kernel's test_hmm (/dev/hmm_dmirror*, "
                         "CONFIG_TEST_HMM) for programs it can express (default: %(default)s)")
    pc.add_argument("--repeat", type=int, default=1,
                    help="runs the reproducer makes by default, 0 until killed "
                         "(default: %(default)s)")
    pc.add_argument("--knobs", default="", help=KNOBS_HELP)
    pc.add_argument("--build-dir", default=str(build_dir()))
    pc.set_defaults(func=_cmd_prog2c, op_timeout_ms=5000, program_timeout_ms=20000, append="")

    mn = sub.add_parser("minimize", help="drop ops and simplify arguments of an input while "
                                         "it gives the same title at least as often; writes "
                                         "INPUT.min.svmp")
    _add_vm_options(mn)
    _add_reset_option(mn)
    mn.add_argument("input", help="a text program (.svmp) or a fuzzer input, e.g. DIR/crashes/crash-*")
    mn.add_argument("--tries", type=int, default=3,
                    help="runs of the input, and at most of each step (default: %(default)s)")
    mn.add_argument("--max-steps", type=int, default=300,
                    help="steps that run in the guest, at most (default: %(default)s)")
    mn.add_argument("--knobs", default="", help=KNOBS_HELP)
    mn.add_argument("--op-timeout-ms", type=int, default=5000,
                    help="when the campaign's own is not known")
    mn.add_argument("--program-timeout-ms", type=int, default=20000,
                    help="when the campaign's own is not known")
    mn.set_defaults(func=_cmd_minimize)

    rg = sub.add_parser("regress", help="replay the corpus and compare each program's outcome "
                                        "with its expectation and with the run before")
    _add_vm_options(rg)
    _add_reset_option(rg)
    rg.add_argument("--kernel", default="",
                    help="a kernel source tree (or debian-6.1: Debian's linux-source-6.1) to "
                         "run, built through the cache (default: the build's kernel)")
    rg.add_argument("--against", default="",
                    help="a second kernel, as --kernel, run with the same corpus and shown "
                         "side by side")
    rg.add_argument("--corpus", default=str(REPO_ROOT / "corpus" / "programs"))
    rg.add_argument("--only", default="", help="comma-separated program names to run")
    rg.add_argument("--results", default=str(build_dir() / "regress"),
                    help="where each kernel's results are kept and compared (default: "
                         "%(default)s)")
    rg.add_argument("--junit", default="", help="write a JUnit XML file here")
    rg.add_argument("--knobs", default="",
                    help="test-only driver knobs for every program (\"break_imbalance=1\"): a "
                         "planted bug, to see regress catch it")
    rg.add_argument("--op-timeout-ms", type=int, default=5000)
    rg.add_argument("--program-timeout-ms", type=int, default=20000)
    rg.set_defaults(func=_cmd_regress)

    rep = sub.add_parser("report", help="a campaign as an HTML page and a Markdown summary: "
                                        "figures, plots over time, triaged buckets")
    rep.add_argument("dir", help="the campaign directory (svmfuzz fuzz --workdir)")
    rep.add_argument("-o", "--output", help="where they go (default: DIR/report)")
    rep.add_argument("--build-dir", default=str(build_dir()))
    rep.set_defaults(func=_cmd_report)

    sy = sub.add_parser("symbolize", help="a console log or report with each kernel and "
                                          "driver frame followed by its file:line")
    sy.add_argument("log", help="the log, or - for standard input")
    sy.add_argument("--build-dir", default=str(build_dir()))
    sy.set_defaults(func=_cmd_symbolize)

    rp = sub.add_parser("repro", help="run one input again and again and say how often it "
                                      "gives which title")
    _add_vm_options(rp)
    _add_reset_option(rp)
    rp.add_argument("input", help="a text program (.svmp) or a fuzzer input, e.g. DIR/crashes/crash-*")
    rp.add_argument("-n", type=int, default=10, help="runs (default: %(default)s)")
    rp.add_argument("--knobs", default="", help=KNOBS_HELP)
    rp.add_argument("--op-timeout-ms", type=int, default=5000,
                    help="when the campaign's own is not known")
    rp.add_argument("--program-timeout-ms", type=int, default=20000,
                    help="when the campaign's own is not known")
    rp.set_defaults(func=_cmd_repro)
    return parser


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    # The C++ runner module comes from the build the command names.
    native.use_build(Path(args.build_dir))
    # A SIGTERM (kill, a CI job's timeout) unwinds like Ctrl-C, so that a
    # campaign's engine and VMs are stopped and its state kept.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.func(args)
    except SvmfuzzError as e:
        print(f"svmfuzz: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("svmfuzz: interrupted", file=sys.stderr)
        return 130
