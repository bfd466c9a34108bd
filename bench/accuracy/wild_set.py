"""Photos in the wild, several of each person: the recall side of identities (people split into
several identities), where ``portraits_set`` is the precision side (look-alikes merged).

    .venv/bin/python -m bench.accuracy.wild_set MIRRORS [--orders 20] [--work DIR]

``MIRRORS``: a folder holding git clones (or the ``fetch`` tool's snapshots, named
``OWNER+NAME``) of the repositories in :data:`SOURCES`, each read at its pinned commit:

- ``serengil/deepface``'s test photos (celebrities in the wild, large photos); the people are the
  connected groups of the same-person pairs its ``master.csv`` lists (a photo in no such pair has
  no label and is left out);
- ``justadudewhohacks/face-api.js``'s example faces: eight actors of a TV series, five stills each;
- ``ageitgey/face_recognition``'s examples and test photos (its kNN example's people by folder,
  the rest by file name; photos of several people are left out);
- ``jasmcaus/opencv-course``'s face photos (the "5 celebrity faces" of a Kaggle set: press and
  event photos of five people from the web, 14-27 each, by folder).

Not LFW, not CelebA. Prints the same tables as ``portraits_set``.
"""

from __future__ import annotations

from pathlib import Path

from bench import record
from bench.accuracy.cluster_real import RealSet
from bench.accuracy.labelled_photos import built_set, git, main

SOURCES = {
    "serengil/deepface": "243209fd7b46ecdecf72665cc25219f6e8181f25",
    "justadudewhohacks/face-api.js": "a86f011d72124e5fb93e59d5c4ab98f699dd5c9c",
    "ageitgey/face_recognition": "2e2dccea9dd0ce730c8d464d0f67c6eebb40c9d1",
    "jasmcaus/opencv-course": "c028d3624fd77f34ae9f1a57a13106551a018c4c",
}
#: opencv-course's folder names of its five people (the train and val folders spell them apart)
OPENCV_COURSE_PEOPLE = {"ben afflek": "ben_affleck", "elton john": "elton_john", "jerry seinfield": "jerry_seinfeld"}
#: face_recognition's photos outside its kNN example's folders: file -> person
FACE_RECOGNITION_FILES = {
    "examples/obama.jpg": "obama",
    "examples/obama2.jpg": "obama",
    "examples/obama-1080p.jpg": "obama",
    "examples/biden.jpg": "biden",
    "examples/alex-lacamoire.png": "alex_lacamoire",
    "examples/lin-manuel-miranda.png": "lin_manuel_miranda",
    "examples/knn_examples/test/alex_lacamoire1.jpg": "alex_lacamoire",
    "examples/knn_examples/test/obama1.jpg": "obama",
    "examples/knn_examples/test/johnsnow_test1.jpg": "kit_harington",
    "tests/test_images/obama.jpg": "obama",
    "tests/test_images/obama2.jpg": "obama",
    "tests/test_images/obama3.jpg": "obama",
    "tests/test_images/biden.jpg": "biden",
}


def _repo(mirrors: Path, name: str) -> Path:
    d = mirrors / name.replace("/", "+")
    return d / "repo" if (d / "repo").exists() else d


def _deepface_people(repo: Path) -> dict[str, str]:
    """Photo -> person: the connected groups of master.csv's same-person pairs."""
    parent: dict[str, str] = {}

    def root(a: str) -> str:
        while parent.setdefault(a, a) != a:
            a = parent[a]
        return a

    for line in git(repo, "show", f"{SOURCES['serengil/deepface']}:tests/unit/dataset/master.csv").splitlines()[1:]:
        a, b, decision = line.strip().split(",")
        if decision == "Yes":
            parent[root(a)] = root(b)
    return {f: f"deepface-{root(f)}" for f in parent}


def write_archive(mirrors: Path, root: Path) -> dict[Path, str]:
    """The labelled photos as ``root/images/SOURCE/...``; path -> person."""
    wanted: list[tuple[str, str, str]] = []  # repo, path, person
    deepface = _repo(mirrors, "serengil/deepface")
    wanted += [("serengil/deepface", f"tests/unit/dataset/{f}", p) for f, p in _deepface_people(deepface).items()]
    faceapi = _repo(mirrors, "justadudewhohacks/face-api.js")
    for path in git(
        faceapi, "ls-tree", "-r", "--name-only", SOURCES["justadudewhohacks/face-api.js"], "examples/images"
    ).split():
        parts = path.split("/")
        if len(parts) == 4:  # examples/images/PERSON/FILE
            wanted.append(("justadudewhohacks/face-api.js", path, f"faceapi-{parts[2]}"))
    fr = _repo(mirrors, "ageitgey/face_recognition")
    train = "examples/knn_examples/train"
    for path in git(fr, "ls-tree", "-r", "--name-only", SOURCES["ageitgey/face_recognition"], train).split():
        wanted.append(("ageitgey/face_recognition", path, path.split("/")[3]))
    wanted += [("ageitgey/face_recognition", p, person) for p, person in FACE_RECOGNITION_FILES.items()]
    course = _repo(mirrors, "jasmcaus/opencv-course")
    for path in git(
        course, "ls-tree", "-r", "--name-only", SOURCES["jasmcaus/opencv-course"], "Resources/Faces"
    ).splitlines():
        folder = path.split("/")[3].lower().replace("_", " ")
        wanted.append(
            ("jasmcaus/opencv-course", path, "course-" + OPENCV_COURSE_PEOPLE.get(folder, folder.replace(" ", "_")))
        )
    labels = {}
    for repo, path, person in wanted:
        out = root / "images" / repo.replace("/", "+") / path.replace("/", "__")
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(git(_repo(mirrors, repo), "show", f"{SOURCES[repo]}:{path}", binary=True))
        labels[out] = person
    return labels


def wild_set(mirrors: Path, work: Path, rebuild: bool = False) -> RealSet:
    """The labelled faces (see the module doc), cached in ``work/wild.npz``."""
    return built_set("wild", mirrors, work, write_archive, rebuild)


if __name__ == "__main__":
    help_ = "a folder with OWNER+NAME clones of " + ", ".join(SOURCES)
    record.run(lambda: main("wild", help_, write_archive), "bench.accuracy.wild_set")
