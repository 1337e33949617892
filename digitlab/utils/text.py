"""How digitlab words things for people: names in natural order, the closest known name to a mistyped one."""

from __future__ import annotations

import difflib
import re
from typing import Iterable, Optional

CLOSE_ENOUGH = 0.6  # difflib's own default similarity for a "close match"


def natural_key(text: str) -> list:
    """Sort key in which numbers compare as numbers and letters regardless of case: version_2 before
    version_10, 2.png before 10.png."""
    parts = re.split(r"(\d+)", text)  # text, digits, text, ...: a key's items compare with items of their kind
    return [int(part) if index % 2 else part.lower() for index, part in enumerate(parts)]


def closest(word: str, candidates: Iterable[str], cutoff: float = CLOSE_ENOUGH) -> Optional[str]:
    """The candidate most like `word`, if any is at least `cutoff` alike (0 to 1); the one candidate that begins
    with `word`, if there is one. A dotted name (``trainer.max_epoch``) is also compared by its last part with the
    candidates of its own section."""
    candidates = list(candidates)
    started = [c for c in candidates if c.startswith(word) and word.rpartition(".")[2]]
    if len(started) == 1:  # an abbreviation (`trainer.max_ep`): the one name it begins
        return started[0]
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=cutoff)
    if not matches:  # a typo in the last part of a long key drowns in the shared prefix
        section, _, leaf = word.rpartition(".")
        leaves = {c.rpartition(".")[2]: c for c in candidates if c.rpartition(".")[0] == section}
        matches = [leaves[m] for m in difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=cutoff)]
    return matches[0] if matches else None


def did_you_mean(match: Optional[str]) -> str:
    """`` Did you mean 'MATCH'?``, to follow a sentence that names a mistyped word; nothing without a match."""
    return f" Did you mean '{match}'?" if match else ""
