import io
import shutil
import subprocess

import pytest

from svmfuzz.artifacts.cpio import NewcWriter


def make_archive() -> bytes:
    buf = io.BytesIO()
    w = NewcWriter(buf)
    w.directory("bin")
    w.file("bin/hello", b"hello world\n", 0o755)
    w.symlink("bin/sh", "hello")
    w.char_device("console", 5, 1)
    w.finish()
    return buf.getvalue()


def test_archive_is_reproducible_and_aligned():
    data = make_archive()
    assert data == make_archive()
    assert data.startswith(b"070701") and len(data) % 4 == 0
    assert b"TRAILER!!!" in data


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio is installed by install-deps")
def test_cpio_reads_it_back(tmp_path):
    listing = subprocess.run(["cpio", "-itv"], input=make_archive(), capture_output=True,
                             check=True).stdout.decode()
    lines = listing.splitlines()
    assert any(l.startswith("d") and l.endswith("bin") for l in lines)
    assert any(l.startswith("-rwxr-xr-x") and "bin/hello" in l for l in lines)
    assert any(l.startswith("l") and "bin/sh -> hello" in l for l in lines)
    assert any(l.startswith("crw-------") and "5,   1" in l for l in lines)
    subprocess.run(["cpio", "-id", "--quiet", "bin/hello"], input=make_archive(),
                   cwd=tmp_path, check=True)
    assert (tmp_path / "bin" / "hello").read_bytes() == b"hello world\n"
