"""Known outcomes: findings that a correct kernel gives in this guest, each
with the reason it is expected (corpus/known-outcomes, in the spirit of
guest-driver/hmm-tests.known). Triage marks a bucket whose title matches an
entry as known and leaves it out of the headline count.

Format, one entry a line: `<title or fnmatch wildcard> | <reason>`; `#` starts
a comment line. A title pattern without a reason is an error.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from svmfuzz.paths import REPO_ROOT

DEFAULT = REPO_ROOT / "corpus" / "known-outcomes"


class KnownError(ValueError):
    pass


@dataclass(frozen=True)
class Known:
    pattern: str
    reason: str
    line: int


def parse(text: str, name: str = "known-outcomes") -> list[Known]:
    entries = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern, sep, reason = (s.strip() for s in line.partition("|"))
        if not sep or not pattern or not reason:
            raise KnownError(f"{name}:{n}: want '<title> | <reason>', got {raw!r}")
        entries.append(Known(pattern, reason, n))
    return entries


def load(path: Path = DEFAULT) -> list[Known]:
    try:
        text = path.read_text()
    except OSError as e:
        raise KnownError(f"{path}: {e.strerror}") from e
    return parse(text, str(path))


def match(title: str, entries: list[Known]) -> Known | None:
    """The first entry whose pattern matches the whole title."""
    for k in entries:
        if fnmatch.fnmatchcase(title, k.pattern):
            return k
    return None
