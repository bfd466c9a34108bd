"""testbed/s3_fill.py, which makes bench/speed/listing.py's 10^6 S3 keys in minutes by loading SeaweedFS's
filer metadata instead of a PUT per key: the keys it makes list exactly as keys PUT through S3
do (names, sizes, ETags), folders and the last key included -- else the 10^6-key listing
figure in bench/RESULTS.md would measure something else."""

from testbed import s3_fill


def listing(client, bucket: str) -> list[tuple[str, int, str]]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="night/")
    return [(o["Key"], o["Size"], o["ETag"]) for page in pages for o in page.get("Contents", [])]


def test_keys_loaded_as_filer_metadata_list_like_keys_put_through_s3(seaweedfs, tmp_path):
    keys = [f"night/shard-{i // 1000:04d}/img-{i:07d}.jpg" for i in range(2345)]
    s3_fill.fill(seaweedfs.client, seaweedfs.shell, "fill-by-metadata", keys, tmp_path)
    seaweedfs.client.create_bucket(Bucket="fill-by-put")
    for key in keys[:3] + keys[-3:]:
        seaweedfs.client.put_object(Bucket="fill-by-put", Key=key, Body=b"")

    loaded = listing(seaweedfs.client, "fill-by-metadata")
    assert [k for k, _, _ in loaded] == sorted(keys), "every key once, the last one included"
    put = {k: (s, e) for k, s, e in listing(seaweedfs.client, "fill-by-put")}
    assert len(put) == 6
    assert all(put[k] == (s, e) for k, s, e in loaded if k in put)
