import json
import os

import pytest

from svmfuzz.artifacts import kernel
from svmfuzz.errors import SvmfuzzError


def test_fragment_parsing():
    wanted = kernel.parse_fragment(
        "# comment\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=n\nCONFIG_E=30\n")
    assert wanted == {"CONFIG_A": "y", "CONFIG_B": "m", "CONFIG_C": "n", "CONFIG_D": "n",
                      "CONFIG_E": "30"}


def test_missing_options_names_each_one():
    wanted = {"CONFIG_A": "y", "CONFIG_B": "m", "CONFIG_C": "n", "CONFIG_E": "30"}
    config = "CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\n# CONFIG_X is not set\n"
    assert kernel.missing_options(wanted, config) == [
        "CONFIG_B=m (got y)", "CONFIG_C=n (got y)", "CONFIG_E=30 (got not set)"]
    assert kernel.missing_options({"CONFIG_A": "y", "CONFIG_X": "n"}, config) == []


def test_the_shipped_fragment_asks_for_the_oracles():
    wanted = kernel.parse_fragment(kernel.FRAGMENT.read_text())
    for opt in ("CONFIG_KASAN", "CONFIG_KCOV", "CONFIG_PROVE_LOCKING", "CONFIG_DEVICE_PRIVATE",
                "CONFIG_HMM_MIRROR", "CONFIG_DEBUG_KMEMLEAK", "CONFIG_FAILSLAB", "CONFIG_ZRAM"):
        assert wanted[opt] == "y", opt
    assert wanted["CONFIG_TEST_HMM"] == "m"


def test_a_debian_source_is_named_and_a_missing_one_said(tmp_path, monkeypatch):
    monkeypatch.setitem(kernel.DEBIAN_SOURCES, "debian-6.1",
                        ("linux-source-6.1", tmp_path / "linux-source-6.1.tar.xz"))
    with pytest.raises(SvmfuzzError, match="install the Debian package linux-source-6.1"):
        kernel.resolve_source("debian-6.1", print)


def test_the_fuzz_profile_limits_kcov_and_keeps_the_debug_options():
    config, folders = kernel.PROFILES["fuzz"]
    wanted = kernel.parse_fragment(kernel.FRAGMENT.read_text() + config)
    assert wanted["CONFIG_KCOV_INSTRUMENT_ALL"] == "n"
    assert wanted["CONFIG_KCOV_ENABLE_COMPARISONS"] == "n"
    for oracle in ("CONFIG_KASAN", "CONFIG_PROVE_LOCKING", "CONFIG_KCOV"):
        assert wanted[oracle] == "y", oracle
    assert folders == ("mm",)
    assert kernel.PROFILES["debug"] == ("", ())


def test_folders_are_instrumented_during_the_build_and_left_as_they_were(tmp_path):
    mm = tmp_path / "mm"
    mm.mkdir()
    makefile = mm / "Makefile"
    original = "KCOV_INSTRUMENT_slub.o := n\nobj-y += slub.o\n"
    makefile.write_text(original)
    os.utime(makefile, ns=(1_000_000_000, 2_000_000_000))
    with kernel.instrumented(tmp_path, ("mm",)):
        text = makefile.read_text()
        assert text.count("KCOV_INSTRUMENT := y") == 1
        assert text.index("KCOV_INSTRUMENT := y") < text.index("KCOV_INSTRUMENT_slub.o := n")
    # The user's tree, and so its fingerprint, is unchanged.
    assert makefile.read_text() == original
    assert makefile.stat().st_mtime_ns == 2_000_000_000
    # What a killed build left is removed, and never doubled.
    makefile.write_text(f"{kernel.KCOV_MARK}\nKCOV_INSTRUMENT := y\n{original}")
    with pytest.raises(RuntimeError):
        with kernel.instrumented(tmp_path, ("mm",)):
            assert makefile.read_text().count("KCOV_INSTRUMENT := y") == 1
            raise RuntimeError("the build failed")
    assert makefile.read_text() == original


def test_an_unknown_profile_is_refused():
    with pytest.raises(SvmfuzzError, match="unknown kernel profile 'fast'"):
        kernel.build(None, print, profile="fast")


def test_the_source_of_a_kernel_artifact(tmp_path, monkeypatch):
    monkeypatch.setenv("SVMFUZZ_CACHE", str(tmp_path / "cache"))
    art = tmp_path / "art"
    art.mkdir()
    def record_source(src):
        (art / kernel.cache.STAMP).write_text(json.dumps({"source": src}))
    record_source(str(kernel.cache_root() / "kernel" / "src" / "deb-6.12-abcd"))
    assert kernel.tree_of(art) is None
    record_source("/src/linux")
    assert kernel.tree_of(art) == "/src/linux"
    (art / kernel.cache.STAMP).unlink()
    with pytest.raises(SvmfuzzError, match="no kernel source recorded"):
        kernel.tree_of(art)
