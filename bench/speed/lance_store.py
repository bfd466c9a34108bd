"""Lance as the face index's store, measured for the choice in docs/identities.md ("The kept index").

Lance is not a facepipe dependency; this runs in a venv of its own:

    python3.11 -m venv /tmp/lancevenv && /tmp/lancevenv/bin/pip install pylance==14.0.3 pyarrow numpy
    /tmp/lancevenv/bin/python bench/speed/lance_store.py /tmp/cs1m/n1000000/out/faces

over the faces table of a ``bench.speed.cluster_scale`` run (10^6 synthetic faces). It writes the
embeddings (fp16) as a Lance dataset but the last 10^4, builds an IVF_FLAT index of sqrt(N)
partitions, and prints: write and build time; open + first query; single-query latency (k = 10,
a quarter of the partitions probed, as ``facepipe search`` probes its cells) and recall@10
against brute force on 200 queries; appending 10^4 faces, a query before and after
``optimize_indices``, and deleting one face; peak RSS.
"""

from __future__ import annotations

import resource
import shutil
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads


def _seconds(step) -> float:
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def main(src: str, work: str = "/tmp/lance_store_bench") -> None:
    import lance

    t = pads.dataset(src, format="parquet", partitioning="hive").to_table(columns=["face_id", "embedding"])
    x = t.column("embedding").combine_chunks().flatten().to_numpy().reshape(t.num_rows, -1).astype(np.float32)
    ids = t.column("face_id").combine_chunks()
    n, new = len(x), 10_000
    base = x[:-new]

    def table(v: np.ndarray, face_ids: pa.Array) -> pa.Table:
        flat = pa.array(v.astype(np.float16).reshape(-1), pa.float16())
        return pa.table({"face_id": face_ids, "vector": pa.FixedSizeListArray.from_arrays(flat, v.shape[1])})

    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    lance.write_dataset(table(base, ids.slice(0, n - new)), work)
    written = time.perf_counter() - t0
    nlist = int(np.sqrt(n))
    t0 = time.perf_counter()
    lance.dataset(work).create_index("vector", index_type="IVF_FLAT", num_partitions=nlist, metric="L2")
    print(f"write {written:.1f} s, IVF_FLAT build ({nlist} partitions) {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(0)
    q = base[rng.choice(len(base), 200, replace=False)] + rng.normal(size=(200, x.shape[1])).astype(np.float32) * 0.02

    def query(d, v):
        return d.to_table(
            columns=["face_id", "_distance"], nearest={"column": "vector", "q": v, "k": 10, "nprobes": nlist // 4}
        )

    t0 = time.perf_counter()
    d = lance.dataset(work)
    query(d, q[0])
    opened = time.perf_counter() - t0
    lat, rec = [], []
    for v in q:
        t0 = time.perf_counter()
        r = query(d, v)
        lat.append(time.perf_counter() - t0)
        exact = ids.take(pa.array(np.argsort(((base - v) ** 2).sum(1))[:10])).to_pylist()
        rec.append(len(set(r.column("face_id").to_pylist()) & set(exact)) / 10)
    print(
        f"open + first query {opened * 1e3:.0f} ms; p50 {np.percentile(lat, 50) * 1e3:.1f} ms, "
        f"p99 {np.percentile(lat, 99) * 1e3:.1f} ms; recall@10 {np.mean(rec):.3f}"
    )
    appended = _seconds(lambda: lance.write_dataset(table(x[-new:], ids.slice(n - new)), work, mode="append"))
    d = lance.dataset(work)
    before = _seconds(lambda: query(d, q[0]))
    optimized = _seconds(d.optimize.optimize_indices)
    d = lance.dataset(work)
    after = _seconds(lambda: query(d, q[0]))
    deleted = _seconds(lambda: d.delete(f"face_id = '{ids[0].as_py()}'"))
    print(
        f"append 10^4 {appended:.2f} s; a query before optimize_indices {before * 1e3:.0f} ms; optimize_indices "
        f"{optimized:.1f} s; a query after {after * 1e3:.0f} ms; delete one face {deleted * 1e3:.0f} ms"
    )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main(*sys.argv[1:])
