"""Array helpers the clustering modules share.

:func:`unique`: numpy 2.4's ``np.unique`` of a plain integer array (no ``return_*``) hashes
instead of sorting, 2.5 to 20 times slower than a sort on this stage's arrays: 6M edge keys took
8.1 s against 0.4 s (the region's graph of an incremental night at 10^6 faces). :data:`CHUNK`:
the rows a step over every face takes at a time, so it makes no temporaries of every face.
:class:`Names`: the archive's face ids kept in Arrow, read out a few at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def unique(a: np.ndarray) -> np.ndarray:
    """The sorted distinct values of ``a`` (flattened), as ``np.unique(a)`` gives them."""
    s = np.sort(np.asarray(a).ravel())
    return s[np.r_[True, s[1:] != s[:-1]]] if len(s) else s


#: rows at a time where a step over every face would otherwise make (N, k) or (N, D) temporaries
CHUNK = 2**16


class Names(Sequence):
    """Strings held in one Arrow array and read out a few at a time: the archive's face ids (10^7
    Python strings were a gigabyte and seconds to make, and a night reads a few thousand of them).
    A sequence of ``str`` like the list it replaces; :func:`take` and :func:`positions` read many."""

    def __init__(self, values: pa.Array | pa.ChunkedArray) -> None:
        self.arrow = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values

    def __len__(self) -> int:
        return len(self.arrow)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.arrow[i].to_pylist()
        return self.arrow[int(i)].as_py()

    def __iter__(self) -> Iterator[str]:
        for at in range(0, len(self.arrow), CHUNK):
            yield from self.arrow.slice(at, CHUNK).to_pylist()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment] -- equal to a list, so unhashable like one

    def __repr__(self) -> str:
        return f"Names({len(self)}: {self[:3]}...)"


def take(names: Sequence[str], rows: Iterable[int] | np.ndarray) -> list[str]:
    """``[names[i] for i in rows]``, in one Arrow take where ``names`` are :class:`Names`."""
    rows = np.asarray(rows if isinstance(rows, np.ndarray) else list(rows), np.int64)
    if isinstance(names, Names):
        return names.arrow.take(pa.array(rows)).to_pylist()
    return [names[i] for i in rows.tolist()]


def positions(names: Sequence[str], wanted: Iterable[str]) -> dict[str, int]:
    """Each of ``wanted`` that ``names`` (distinct) holds -> its row; the others are left out."""
    wanted = sorted(set(wanted))
    if isinstance(names, Names):
        at = pc.index_in(pa.array(wanted, pa.string()), value_set=names.arrow).to_pylist()
        return {w: i for w, i in zip(wanted, at) if i is not None}
    row = {f: i for i, f in enumerate(names)}
    return {w: row[w] for w in wanted if w in row}
