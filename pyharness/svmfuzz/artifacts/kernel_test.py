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
