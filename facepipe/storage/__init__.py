"""Where the output lives and how it changes: its layout and commit protocol (staging, publish),
the input state, erasure tombstones, Parquet encryption, local and S3 filesystems."""
