"""How long DROCC training takes at face-embedding scale, per adversarial-search setting.

    .venv/bin/python -m bench.speed.drocc_train_speed [--n 20000] [--epochs 7] [--device cpu|cuda]

Trains on N random 128-d points (the cost does not depend on the values) with the default config
except the epochs, once with the default ascent (30 steps of 0.1) and once with 10 steps of 0.3, and prints
seconds per DROCC epoch (CE-only epochs are
timed apart and subtracted) and the projected time of a default 30-epoch run on 100k faces.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time

import numpy as np

from bench import record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=7, help="of which the default 5 are CE-only")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    from facepipe.stages.score.drocc import DROCCConfig, train_drocc

    x = np.random.default_rng(0).normal(size=(a.n, 128)).astype(np.float32)
    base = DROCCConfig()
    logging.getLogger("facepipe.stages.score.drocc").setLevel(
        logging.ERROR
    )  # CE epochs alone leave it inverted: expected here
    t0 = time.perf_counter()
    train_drocc(x, dataclasses.replace(base, epochs=base.only_ce_epochs), a.device)
    t_ce = time.perf_counter() - t0
    logging.getLogger("facepipe.stages.score.drocc").setLevel(logging.NOTSET)
    for steps, size in ((base.ascent_num_steps, base.ascent_step_size), (10, 0.3)):
        cfg = dataclasses.replace(base, epochs=a.epochs, ascent_num_steps=steps, ascent_step_size=size)
        t0 = time.perf_counter()
        train_drocc(x, cfg, a.device)
        per = (time.perf_counter() - t0 - t_ce) / (a.epochs - base.only_ce_epochs)
        full = (t_ce + per * (base.epochs - base.only_ce_epochs)) * 100_000 / a.n
        print(
            f"{steps:2d} ascent steps of {size}: {per:.2f} s per DROCC epoch of {a.n} points on {a.device}; "
            f"a {base.epochs}-epoch run on 100k faces ~{full / 60:.1f} min"
        )


if __name__ == "__main__":
    record.run(main, "bench.speed.drocc_train_speed")
