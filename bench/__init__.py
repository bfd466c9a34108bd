"""facepipe's benchmarks, by role: accuracy/ (quality on real and synthetic sets), speed/ (time
and memory), diagnostics/ (what a number comes from). Run each as a module from the repo root,
``python -m bench.ROLE.NAME``; each prints a human summary and writes a JSON record
(``bench.record``). Numbers go to bench/RESULTS.md with the command that made them."""
