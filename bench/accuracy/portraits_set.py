"""Identities at thousands of real people: the portraits of UK parliamentarians that
TheyWorkForYou has shown over twenty years -- a harder labelled set than ``cluster_real``'s.

    .venv/bin/python -m bench.accuracy.portraits_set MIRROR [--orders 20] [--work DIR]

``MIRROR``: a git clone (or the ``fetch`` tool's snapshot) of github.com/mysociety/theyworkforyou;
the set is read at commit :data:`COMMIT`, so it is the same for everyone. Every version ever
committed of ``www/docs/images/mps/PERSON.*`` and ``mpsL/PERSON.*`` is a photo of the person with
that id: a new official portrait replaced an old one over the years (2004-2026), so one person
has photos taken years apart -- different photos, not augmentations of one. Thousands of people
are in it, most with one photo (the look-alikes a clustering must not merge), about a thousand
with two or more (the same person it must not split). The photos are small (portrait
thumbnails, 49x59 to 160x120): an archive's small faces. Not LFW, not CelebA.

How the set is built (cached under ``--work``): every blob is written as
``images/PERSON/SHA.EXT``; then ``bench.accuracy.labelled_photos``: ``facepipe run`` with its
defaults extracts the faces, the largest face of each photo is the person's, and the same photo
committed twice (a thumbnail and its large version, a re-encode) counts once. Labels come from
the path, never from the faces.

Prints, over ``--orders`` random orders of the faces, BCubed precision (worst and mean), recall
and F of facepipe's clustering with its defaults and of dlib's Chinese Whispers at 0.5 (the
plain dlib pipeline: ``face_recognition``'s threshold), then each method's threshold curve.
"""

from __future__ import annotations

from pathlib import Path

from bench import record
from bench.accuracy.cluster_real import RealSet
from bench.accuracy.labelled_photos import built_set, git, main

REPO = "mysociety/theyworkforyou"
COMMIT = "4a5b59cadb59f96e4e05d268b41a1842e1aade82"
FOLDERS = ("www/docs/images/mps", "www/docs/images/mpsL")


def write_archive(mirror: Path, root: Path) -> dict[Path, str]:
    """Every committed version of the portraits as ``root/images/PERSON/SHA.EXT``; path -> person."""
    labels = {}
    for line in git(mirror, "rev-list", "--objects", COMMIT, "--", *FOLDERS).splitlines():
        sha, _, path = line.partition(" ")
        name = path.rsplit("/", 1)[-1]
        person, _, ext = name.partition(".")
        if not (person.isdigit() and ext in ("jpg", "jpeg", "png")) or not path.startswith(FOLDERS):
            continue
        out = root / "images" / person / f"{sha[:12]}.{ext}"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(git(mirror, "cat-file", "blob", sha, binary=True))
        labels[out] = person
    return labels


def portraits_set(mirror: Path, work: Path, rebuild: bool = False) -> RealSet:
    """The labelled faces (see the module doc), cached in ``work/portraits.npz``."""
    return built_set("portraits", mirror, work, write_archive, rebuild)


if __name__ == "__main__":
    help_ = f"a clone of github.com/{REPO} holding commit {COMMIT[:10]}"
    record.run(lambda: main("portraits", help_, write_archive), "bench.accuracy.portraits_set")
