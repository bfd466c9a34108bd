"""Writer: tables follow the declared schemas; publishing replaces only the same run's files."""

import pyarrow as pa
import pyarrow.parquet as pq

from facepipe import schema
from facepipe.schema import EMBEDDED as EMBEDDED_SCHEMA
from facepipe.stages import write as writer
from facepipe.storage.output import Output


def _detected(n_faces=(2, 0), dim=128):
    rows = []
    for i, k in enumerate(n_faces):
        rows.append(
            {
                "image_id": f"img{i}",
                "source_uri": f"/x/{i}.jpg",
                "width": 100,
                "height": 80,
                "status": "ok",
                "error": None,
                "n_faces": k,
                "detector": "centerface@abc",
                "boxes": [float(v) for v in range(4 * k)],
                "scores": [0.9] * k,
                "landmarks": [float(v) for v in range(10 * k)],
                "t_decode": 0.1,
                "t_detect": 0.2,
                "embedder": "dlib_resnet@def",
                "align": "dlib_sp5",
                "embedding_dim": dim,
                "embeddings": [float(v) for v in range(dim * k)],
                "landmark_offsets": [float(v) for v in range(10 * k)],
                "sharpness": [100.0 + v for v in range(k)],
                "detail": [300.0 + v for v in range(k)],
                "face_logit": [200.0 + v for v in range(k)],
                "t_embed": 0.3,
            }
        )
    return pa.Table.from_pylist(rows, schema=EMBEDDED_SCHEMA)


def test_tables_follow_declared_schemas():
    t = writer.build_tables(_detected(), "r1")
    assert t["images"].schema.equals(schema.IMAGES) and t["faces"].schema.equals(schema.FACES)
    faces = t["faces"].to_pylist()
    assert [f["face_index"] for f in faces] == [0, 1]
    assert faces[1]["x1"] == 4.0 and faces[1]["landmarks"][0] == 10.0
    assert faces[0]["face_id"] == writer.face_id_for("img0", 0) != writer.face_id_for("img0", 1)
    # each face gets its own slice of the image's flat embedding list
    assert faces[1]["embedding"] == [float(v) for v in range(128, 256)]
    assert faces[0]["embedder"] == "dlib_resnet@def" and faces[0]["align"] == "dlib_sp5"
    # and its slice of each per-face value list, by name
    assert faces[1]["landmark_offsets"] == [float(v) for v in range(10, 20)]
    assert (faces[1]["sharpness"], faces[1]["face_logit"], faces[1]["detail"]) == (101.0, 201.0, 301.0)


def test_columns_are_matched_by_name_so_reordered_fields_cannot_swap_data(monkeypatch):
    """Two float32 fields swapped in the declared schema move with their names: the data stays put."""
    declared = schema.faces_schema

    def swapped(dim: int = schema.DEFAULT_EMBEDDING_DIM) -> pa.Schema:
        names = declared(dim).names
        i, j = names.index("sharpness"), names.index("face_logit")
        fields = list(declared(dim))
        fields[i], fields[j] = fields[j], fields[i]
        return pa.schema(fields, metadata=declared(dim).metadata)

    monkeypatch.setattr(schema, "faces_schema", swapped)
    faces = writer.build_tables(_detected(), "r1")["faces"]
    assert faces.schema.names.index("face_logit") < faces.schema.names.index("sharpness")
    assert (faces.column("sharpness")[1].as_py(), faces.column("face_logit")[1].as_py()) == (101.0, 201.0)


def test_faces_schema_follows_the_embedder_dimension():
    t = writer.build_tables(_detected((1, 2), dim=512), "r1")
    assert t["faces"].schema.equals(schema.faces_schema(512))
    assert t["faces"].schema.field("embedding").type == pa.list_(pa.float32(), 512)
    # no faces at all still writes the declared default schema
    assert writer.build_tables(_detected((0,)), "r1")["faces"].schema.equals(schema.FACES)


def test_rerun_replaces_only_its_own_files(tmp_path):
    out = str(tmp_path)
    for run in ("a", "b"):
        stats = writer.write_batch(_detected(), out, run, "2026-01-01")
        Output.open(out).publish(run, stats.column("files")[0].as_py())
    first = sorted(p.name for p in tmp_path.glob("faces/dt=*/*.parquet"))
    stats = writer.write_batch(_detected((1,)), out, "a", "2026-01-02")  # run a again, other date
    Output.open(out).publish("a", stats.column("files")[0].as_py())
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("*/dt=*/*.parquet"))
    assert [f for f in files if "part-b-" in f] == [f for f in files if "part-b-" in f and "2026-01-01" in f]
    assert len([f for f in files if "part-b-" in f]) == 2
    a_files = [f for f in files if "part-a-" in f]
    assert a_files and all("2026-01-02" in f for f in a_files)
    assert not (tmp_path / "_staging" / "a").exists()
    assert pq.read_table(tmp_path / a_files[0]).num_rows == 1
    assert len(first) == 2
