"""Arrow schemas of every table facepipe writes, declared once.

Writers, tests, the README and the warehouse DDL all read these objects: a table's columns, their
types and order are declared here and nowhere else. Stages and queries name the columns they
read or build (by name, never by position: ``facepipe.stages.write`` matches its columns to
these schemas by name). Tables are Hive-partitioned by ``dt=YYYY-MM-DD`` in the path, so ``dt`` is not a
column inside the files (DuckDB/Athena/Trino add it from the path).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

#: Number of landmark coordinates per face: (x, y) for left eye, right eye, nose tip,
#: left mouth corner, right mouth corner -- "left" as seen in the image (smaller x).
N_LANDMARK_VALUES = 10
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

#: Per-face values the model actors measure beside each embedding, by name and values per face:
#: the landmark offsets, sharpness and detail (``facepipe.stages.align.quality``), the verifier's face log-odds
#: (``facepipe.stages.score.onet``). Each is a list column of the image rows (``EMBEDDING_FIELDS``,
#: face-major) and a column of the same name in the ``faces`` table; the writer matches them by name.
FACE_VALUES = {"landmark_offsets": N_LANDMARK_VALUES, "sharpness": 1, "detail": 1, "face_logit": 1}

#: Values of ``images.status``; anything but ``ok`` comes with an ``error`` message.
IMAGE_STATUSES = (
    "ok",
    "empty",  # zero bytes
    "not_image",  # bytes are no image format we decode
    "corrupt",  # an image format, but truncated or damaged; or a damaged tar shard / Parquet file
    "too_large",  # more pixels than the decompression-bomb guard allows
    "read_error",  # the bytes could not be read from storage (the unit is retried next run)
)

IMAGES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("n_faces", pa.int32()),
        pa.field("run_id", pa.string(), nullable=False),
    ],
    metadata={"facepipe.table": "images", "facepipe.schema_version": "1"},
)

#: Length of ``faces.embedding`` for the default embedder (dlib's ResNet); ArcFace models write 512.
DEFAULT_EMBEDDING_DIM = 128


def faces_schema(embedding_dim: int = DEFAULT_EMBEDDING_DIM) -> pa.Schema:
    """The ``faces`` table for an embedder of ``embedding_dim`` dimensions.

    ``embedding`` is a fixed-size list in Arrow and a plain LIST<FLOAT> in Parquet, so warehouses
    see ``array<float>`` whatever the model. ``embedder`` (``NAME@SHA12`` of the weights) says how
    to compare embeddings: dlib's are raw (norm about 1.3-1.6; same person below Euclidean 0.6),
    ArcFace's are L2-normalised. Never compare embeddings of two different ``embedder`` values.
    ``align`` names how the face was cut out for the embedder (``facepipe.stages.align.stage``).
    ``landmark_offsets`` and ``sharpness`` say how face-like the detection is as the aligner sees
    it (``facepipe.stages.align.quality``): offsets near 0 and a sharp chip for a real face;
    ``detail`` how much of the chip's contrast is fine detail (low: blurred, or cut from a few pixels);
    ``face_logit`` is a second model's opinion (``facepipe.stages.score.onet``): > 0 face, < 0 not a face.
    """
    return pa.schema(
        [
            pa.field("face_id", pa.string(), nullable=False),
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("face_index", pa.int32(), nullable=False),
            pa.field("x1", pa.float32()),
            pa.field("y1", pa.float32()),
            pa.field("x2", pa.float32()),
            pa.field("y2", pa.float32()),
            pa.field("det_score", pa.float32()),
            pa.field("landmarks", pa.list_(pa.float32(), N_LANDMARK_VALUES)),
            pa.field("detector", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), embedding_dim)),
            pa.field("embedder", pa.string()),
            pa.field("align", pa.string()),
            # detector landmarks on the aligned chip's template minus a face's, face-box units (x, y per landmark)
            pa.field("landmark_offsets", pa.list_(pa.float32(), N_LANDMARK_VALUES)),
            pa.field("sharpness", pa.float32()),  # log(1 + variance of the Laplacian) of the grey chip
            pa.field("face_logit", pa.float32()),  # the face verifier's log-odds that the box holds a face
            pa.field("run_id", pa.string(), nullable=False),
            # log(variance of the Laplacian / variance) of the grey chip's face region; null in rows
            # written before it was measured (schema version 3)
            pa.field("detail", pa.float32()),
        ],
        metadata={"facepipe.table": "faces", "facepipe.schema_version": "4"},
    )


FACES = faces_schema()

FACE_OUTLIERS = pa.schema(
    [
        pa.field("face_id", pa.string(), nullable=False),
        # DROCC's -logit on the face's quality features: higher = less like the run's confident faces
        pa.field("drocc_score", pa.float32(), nullable=False),
        # drocc_score - faces.face_logit: higher = more anomalous; > 0: more likely not a face
        pa.field("outlier_score", pa.float32(), nullable=False),
        pa.field("is_outlier", pa.bool_(), nullable=False),  # outlier_score > threshold
        pa.field("threshold", pa.float32(), nullable=False),
        pa.field("model_id", pa.string(), nullable=False),  # drocc@HASH12 of the model artifact
        pa.field("run_id", pa.string(), nullable=False),
        # log-odds added for an embedding off the confident faces' law (0 within it); in outlier_score
        pa.field("embedding_score", pa.float32()),
        # flagged faces: the largest part of the score -- 'unusable chip' (DROCC), 'not a face' (the
        # verifier), 'embedding off the faces', 'blurred chip'; null when not flagged
        pa.field("reason", pa.string()),
        # log-odds added for a chip with too little detail to identify (0 above the floor, for faces
        # narrower than the identities cluster, and for faces written without detail); in outlier_score
        pa.field("detail_score", pa.float32()),
    ],
    metadata={"facepipe.table": "face_outliers", "facepipe.schema_version": "4"},
)


def identities_schema(embedding_dim: int = DEFAULT_EMBEDDING_DIM) -> pa.Schema:
    """One row per identity of the whole archive (a snapshot: each clustering run replaces it)."""
    return pa.schema(
        [
            pa.field("identity_id", pa.string(), nullable=False),
            pa.field("n_faces", pa.int64(), nullable=False),
            pa.field("centroid", pa.list_(pa.float32(), embedding_dim)),  # mean embedding of its faces
            pa.field("representative_face_id", pa.string()),  # its face with the highest detection score
            pa.field("first_seen_dt", pa.date32()),
            pa.field("last_seen_dt", pa.date32()),
            pa.field("embedder", pa.string()),
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("name", pa.string()),  # given by a person (a `name` correction); null until then
        ],
        metadata={"facepipe.table": "identities", "facepipe.schema_version": "2"},
    )


IDENTITIES = identities_schema()

#: Values of ``face_identity.status``: why a face has an identity or not.
FACE_IDENTITY_STATUSES = (
    "assigned",  # in identity_id
    "unassigned",  # clustered, but its group is smaller than --min-faces: looked at again next night
    "outlier",  # flagged by the outlier stage (face_outliers.is_outlier): never clustered, joins nothing
    "too_small",  # narrower than --cluster-min-face: its embedding is too unreliable to cluster
)

FACE_IDENTITY = pa.schema(
    [
        pa.field("face_id", pa.string(), nullable=False),
        pa.field("identity_id", pa.string()),  # null unless status = 'assigned'
        pa.field("distance", pa.float32()),  # Euclidean distance to the identity's centroid
        pa.field("status", pa.string(), nullable=False),  # FACE_IDENTITY_STATUSES
        pa.field("run_id", pa.string(), nullable=False),
    ],
    metadata={"facepipe.table": "face_identity", "facepipe.schema_version": "2"},
)

IDENTITY_EVENTS = pa.schema(
    [
        # merge: old_ids became the one id in new_ids; split: new_ids = [the old id, the new ones]
        pa.field("event", pa.string(), nullable=False),
        pa.field("old_ids", pa.list_(pa.string()), nullable=False),
        pa.field("new_ids", pa.list_(pa.string()), nullable=False),
        pa.field("n_faces", pa.int64(), nullable=False),  # faces that changed identity with the event
        # the faces placed by this run in the merged identity (merge) or the new ones (split): the cause
        pa.field("face_ids", pa.list_(pa.string()), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        # the corrections (CORRECTIONS.correction_id) that made or shaped the event; empty if none
        pa.field("correction_ids", pa.list_(pa.string())),
    ],
    metadata={"facepipe.table": "identity_events", "facepipe.schema_version": "3"},
)

#: Values of ``corrections.kind`` (facepipe.stages.cluster.corrections).
CORRECTION_KINDS = ("same", "different", "name")

#: Human corrections of the identities, written by `facepipe correct` (or by anyone, same schema)
#: under OUT/corrections/; every clustering honours them. Anchored on face ids, which never change.
CORRECTIONS = pa.schema(
    [
        pa.field("correction_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # CORRECTION_KINDS
        pa.field("face_id", pa.string(), nullable=False),  # same/different: this face; name: a face of the identity
        pa.field("other_face_id", pa.string()),  # same: is this person; different: is not; name: null
        pa.field("name", pa.string()),  # name: what the identity is called
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),  # corrections apply in this order
        pa.field("author", pa.string()),
        pa.field("note", pa.string()),
    ],
    metadata={"facepipe.table": "corrections", "facepipe.schema_version": "1"},
)

# ---------------------------------------------------------------- batches between the stages
# Not tables: the rows that travel between Ray stages, one per image (decode -> detect -> embed ->
# write); the writer turns EMBEDDED rows into the ``images`` and ``faces`` tables.

#: Batch rows leaving the detect stage (one per image): what the model actors pass on.
DETECTED = pa.schema(
    [
        pa.field("image_id", pa.string()),
        pa.field("source_uri", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        pa.field("n_faces", pa.int32()),
        pa.field("detector", pa.string()),
        pa.field("boxes", pa.list_(pa.float32())),  # 4 per face, xyxy
        pa.field("scores", pa.list_(pa.float32())),  # 1 per face
        pa.field("landmarks", pa.list_(pa.float32())),  # 10 per face, (x, y) x 5
        pa.field("t_decode", pa.float64()),  # seconds of stage time attributed to this row
        pa.field("t_detect", pa.float64()),
    ]
)

#: The columns the embed stage adds to a DETECTED row.
EMBEDDING_FIELDS = (
    pa.field("embedder", pa.string()),
    pa.field("align", pa.string()),
    pa.field("embedding_dim", pa.int32()),
    pa.field("embeddings", pa.list_(pa.float32())),  # n_faces * embedding_dim, face-major
    *(pa.field(name, pa.list_(pa.float32())) for name in FACE_VALUES),  # n_faces * width, face-major
    pa.field("t_embed", pa.float64()),
)

#: Batch rows leaving the model actors (DETECTED plus each image's embeddings), into the writer.
EMBEDDED = pa.schema([*DETECTED, *EMBEDDING_FIELDS])


def embedding_matrix(column: pa.Array | pa.ChunkedArray, dtype: type = np.float32) -> np.ndarray:
    """An ``embedding`` or ``centroid`` column (a list of float32 per row) -> (N, D) ``dtype`` array
    (D from a fixed-size list's type, else from the values; (0, 0) for no rows of a plain list)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = arr.flatten().to_numpy(zero_copy_only=False).astype(dtype)
    if len(arr) == 0:
        return np.zeros((0, getattr(arr.type, "list_size", 0)), dtype)
    return values.reshape(len(arr), -1)


def string_array(values: list[str] | pa.Array) -> pa.Array:
    """``values`` as an Arrow string array, as they are when they are one already (10^7 Python
    strings took 10 s and more to convert, each time a night needed its face ids in Arrow)."""
    return values if isinstance(values, pa.Array) else pa.array(values, pa.string())


#: Table name -> schema, in the order the job writes them.
TABLES: dict[str, pa.Schema] = {
    "images": IMAGES,
    "faces": FACES,
    "face_outliers": FACE_OUTLIERS,
    "identities": IDENTITIES,
    "face_identity": FACE_IDENTITY,
    "identity_events": IDENTITY_EVENTS,
}

#: the pipeline's stages whose task seconds a written batch reports (``facepipe.stages.write.BatchStats``)
STAGES = ("decode", "detect", "embed", "write")

STATS_SCHEMA = pa.schema(
    [
        pa.field("n_images", pa.int64()),
        pa.field("n_faces", pa.int64()),
        pa.field("status_counts", pa.list_(pa.struct([("status", pa.string()), ("n", pa.int64())]))),
        *(pa.field(f"t_{s}", pa.float64()) for s in STAGES),
        pa.field("files", pa.list_(pa.string())),
        # source_uri of the images whose bytes could not be read (read_error): their units are retried
        pa.field("unreadable", pa.list_(pa.string())),
    ]
)
