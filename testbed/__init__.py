"""What the tests and the benchmarks share: archives built from real photos (every input layout,
the broken-file corpus, pasted faces, ordinary photos), a real S3 server and its bulk filler,
and the process helpers that start, find and end only what they started."""
