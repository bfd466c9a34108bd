"""facepipe: index faces across huge image archives with Ray Data."""

from __future__ import annotations

__version__ = "0.1.0"


def search(output: str, photos: list[str], k: int = 20, identity: bool = False) -> list:
    """The archive faces nearest each face of ``photos`` (``facepipe search`` in Python):
    :class:`facepipe.tools.search.Hit` lines; see :mod:`facepipe.tools.search`."""
    from facepipe.tools.search import search as _search

    return _search(output, photos, k, identity)
