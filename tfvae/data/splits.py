"""Split names with an optional slice: ``"test"``, ``"test[:8000]"``, ``"train[-5000:]"``,
and unions of them joined by ``+``: ``"train+valid"`` (all of both, in that order).

A slice ``name[a:b]`` selects examples a..b-1 of the split in file order (before any
shuffling or subsampling), with Python's meaning of negative and omitted bounds. Unlike
Python, a bound outside [-N, N] for a split of N examples is an error rather than silently
clipped, and so is a slice that selects nothing: a typo should not train on less data
than asked for without a word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import DataError

_SLICED = re.compile(r"^\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*"
                     r"\[\s*(?P<start>[-+]?\d+)?\s*:\s*(?P<stop>[-+]?\d+)?\s*\]\s*$")
_UNION = re.compile(r"\+(?![^\[]*\])")     # a '+' outside brackets (a bound may be signed: 'train[+5:]')
SYNTAX = ("a split name, optionally sliced as name[start:stop], e.g. 'test[:8000]' or 'test[8000:]', "
          "or a union of them joined by '+', e.g. 'train+valid'")


@dataclass(frozen=True)
class SplitSpec:
    """A parsed split: its ``base`` name and the slice bounds (None: open end); for a union
    ``a+b``, its ``parts`` in order (``base`` is then the text)."""
    text: str
    base: str
    start: int | None = None
    stop: int | None = None
    parts: tuple[SplitSpec, ...] = ()

    @property
    def bases(self) -> tuple[str, ...]:
        """The names of the splits it reads from."""
        return tuple(p.base for p in self.parts) if self.parts else (self.base,)

    @property
    def sliced(self) -> bool:
        return "[" in self.text

    def indices(self, size: int) -> slice:
        """The Python slice of a split of ``size`` examples; DataError if out of range or empty."""
        for bound in (self.start, self.stop):
            if bound is not None and not -size <= bound <= size:
                raise DataError(f"split {self.text!r}: bound {bound} is out of range for the "
                                f"{size} examples of split {self.base!r} (allowed -{size}..{size})")
        selected = slice(self.start, self.stop)
        if len(range(*selected.indices(size))) == 0:
            raise DataError(f"split {self.text!r} selects no examples of the {size} in split "
                            f"{self.base!r}")
        return selected


def parse_split(meta, split) -> SplitSpec:
    """The SplitSpec of ``split`` for the data set described by ``meta`` (a DatasetInfo).

    DataError, naming the valid splits and the slice syntax, for anything else.
    """
    valid = f"expected one of {', '.join(meta.splits)}, optionally sliced as name[start:stop] " \
            f"(e.g. '{meta.splits[-1]}[:1000]'), or several joined by '+'"
    if not isinstance(split, str):
        raise DataError(f"dataset {meta.name!r}: a split must be a string ({SYNTAX}), got {split!r}")
    texts = [part.strip() for part in _UNION.split(split)]
    if len(texts) > 1:
        if not all(texts):
            raise DataError(f"dataset {meta.name!r}: cannot read the union {split!r}: join split names "
                            f"(optionally sliced) with '+', e.g. 'train+valid'")
        if len(set(texts)) < len(texts):
            raise DataError(f"dataset {meta.name!r}: the union {split!r} names a split twice")
        return SplitSpec(split, split, parts=tuple(parse_split(meta, text) for text in texts))
    if split in meta.splits:
        return SplitSpec(split, split)
    match = _SLICED.match(split)
    if match is None:
        if "[" in split or "]" in split:
            raise DataError(f"dataset {meta.name!r}: cannot read the slice in split {split!r}: "
                            f"write name[start:stop] with integer (or empty) bounds and no step; {valid}")
        raise DataError(f"dataset {meta.name!r} has no split {split!r}; {valid}")
    base = match["name"]
    if base not in meta.splits:
        raise DataError(f"dataset {meta.name!r} has no split {base!r} (in {split!r}); {valid}")
    start, stop = (None if match[k] is None else int(match[k]) for k in ("start", "stop"))
    return SplitSpec(split, base, start, stop)
