"""A writer for the newc cpio format the kernel unpacks as its initramfs.

Writing the archive ourselves lets it hold device nodes without root, and
makes it byte-for-byte reproducible (fixed inode numbers, owners, mtimes).
"""

import stat
from typing import BinaryIO


class NewcWriter:
    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        encoded = name.encode() + b"\0"
        fields = [self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0]
        self._ino += 1
        header = b"070701" + b"".join(b"%08x" % v for v in fields)
        self._f.write(header + encoded)
        self._pad(len(header) + len(encoded))
        self._f.write(data)
        self._pad(len(data))

    def _pad(self, n: int) -> None:
        self._f.write(b"\0" * (-n % 4))

    def directory(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def finish(self) -> None:
        self._entry("TRAILER!!!", 0)
