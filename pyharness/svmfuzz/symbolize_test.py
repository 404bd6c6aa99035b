"""Symbolization against the build's own vmlinux and svmdev.ko."""

import pytest

from svmfuzz import symbolize
from svmfuzz.paths import build_dir


@pytest.fixture(scope="module")
def sym():
    build = build_dir()
    if not (build / "artifacts" / "kernel" / "vmlinux").is_file() or \
            not list((build / "artifacts" / "module").glob("svmdev.ko")):
        pytest.skip(f"no vmlinux or svmdev.ko in {build}/artifacts: build first")
    return symbolize.for_build(build)


def _size(sym, module: str, func: str) -> int:
    # kallsyms sizes up to the next symbol: the ELF size plus padding.
    return sym._load(module).symbols[func][0].size + 8


def test_kernel_and_driver_frames_get_their_source_lines(sym):
    hmm = _size(sym, "", "hmm_range_fault")
    work = _size(sym, "svmdev", "svmdev_fault_work")
    report = (f"Call Trace:\n <TASK>\n  hmm_range_fault+0x10/{hmm:#x}\n"
              f"  ? svmdev_fault_work+0x20/{work:#x} [svmdev]\n"
              f"  hmm_range_fault+0x10/{hmm + 4096:#x}\n"
              "  no_such_function_here+0x1/0x10\n <TASK>\n")
    out = symbolize.Symbolizer.report(sym, report).splitlines()
    at = out.index(f"  hmm_range_fault+0x10/{hmm:#x}")
    assert out[at + 1].startswith("      at hmm_range_fault mm/hmm.c:"), out
    mod = [n for n, line in enumerate(out) if "svmdev_fault_work+0x20" in line][0]
    driver = [line for line in out[mod + 1:] if line.startswith("      ")]
    assert driver and "guest-driver/svmdev_" in driver[0], out
    # A size that does not fit is another build: no line rather than a wrong one.
    wrong = out.index(f"  hmm_range_fault+0x10/{hmm + 4096:#x}")
    assert out[wrong + 1] == "      (size differs in vmlinux: not the build that ran)", out
    missing = out.index("  no_such_function_here+0x1/0x10")
    assert out[missing + 1] == "      (not in vmlinux: not the build that ran)", out
    # Lines with no frame are left as they were.
    assert out[:2] == ["Call Trace:", " <TASK>"] and out[-1] == " <TASK>"


def test_addr2line_output_with_inlines_and_unknowns():
    s = symbolize.Symbolizer.__new__(symbolize.Symbolizer)
    s._prefixes = [("/src/linux", "")]
    text = ("0x0000000000001000\ninner\n/src/linux/mm/a.c:10 (discriminator 2)\n"
            "outer\n/src/linux/mm/b.c:20\n0x0000000000002000\n??\n??:0\n")
    groups = s._parse_addr2line(text)
    assert [[str(loc) for loc in g] for g in groups] == [["inner mm/a.c:10", "outer mm/b.c:20"], []]


def test_a_missing_vmlinux_is_a_clear_error(tmp_path):
    with pytest.raises(symbolize.SymbolizeError, match="no .*vmlinux: symbolization needs"):
        symbolize.Symbolizer(tmp_path / "vmlinux")
