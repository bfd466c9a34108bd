"""Does DROCC on real face embeddings score non-faces above faces?

    .venv/bin/python -m bench.accuracy.drocc_faces

Normal data: the faces CenterFace finds in the test photos, each cut many times the way the job
cuts it but from a jittered box (shift and scale up to 10%), mirrored half the time, with
brightness/contrast changes: 1 person-photo -> 40 chips -> 40 dlib embeddings. Faces of half the
photos train the model; the other half's are the normal test set (people the model never saw).

Non-faces, embedded through the same path (shape predictor on a box -> dlib chip -> ResNet):
- CenterFace's detections at a very low score threshold (0.02) on real photos without people
  (scikit-image's coffee, chelsea the cat, rocket, astronaut's background crops, coins, horse...);
- random boxes on those photos;
- garbage: noise images, flat colour, and heavily blurred/flipped face crops.

Prints the AUC of "non-face" from DROCC's score (seeded; reproduces), beside scikit-learn's
OneClassSVM and IsolationForest and the distance to the training mean on the same inputs.
"""

from __future__ import annotations

import numpy as np

from bench import record


def main(seed: int = 0) -> dict:
    import cv2
    from skimage import data as skd
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score
    from sklearn.svm import OneClassSVM

    from facepipe.registry import create_model
    from facepipe.stages.align.stage import align_image, cut_chips
    from facepipe.stages.decode import DecodeConfig, decode_image
    from facepipe.stages.detect.stage import DetectConfig, detect_images
    from facepipe.stages.score.drocc import DROCCConfig, train_drocc
    from facepipe.tools import demo

    rng = np.random.default_rng(seed)
    det = create_model("centerface", kind="detector")
    sp = create_model("dlib_shape_predictor_5", kind="landmarks")
    net = create_model("dlib_resnet", kind="embedder")

    def embed(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        lm = np.zeros((len(boxes), 5, 2), np.float32)
        return net.embed(
            cut_chips(align_image(image, boxes.astype(np.float32), lm, net.chip, "dlib_sp5", sp), net.chip)
        )

    def detect(image: np.ndarray, thr: float):
        d = decode_image(cv2.imencode(".png", image[..., ::-1])[1].tobytes(), DecodeConfig())
        (f,) = detect_images(
            det, [d.pixels], [(d.scale_x, d.scale_y)], [(d.width, d.height)], DetectConfig(score_threshold=thr)
        )
        return f

    faces: dict[str, list[np.ndarray]] = {}
    for name, path in sorted(demo.photos().items()):
        img = decode_image(path.read_bytes(), DecodeConfig(long_side=0)).pixels
        found = detect(img, 0.5)
        for k, b in enumerate(found.boxes):
            w, h = b[2] - b[0], b[3] - b[1]
            out = []
            for _ in range(40):
                jb = b + np.array([w, h, w, h]) * rng.uniform(-0.1, 0.1, 4)
                im = img
                if rng.random() < 0.5:  # mirror the photo and the box
                    im = img[:, ::-1].copy()
                    jb = np.array([img.shape[1] - jb[2], jb[1], img.shape[1] - jb[0], jb[3]])
                im = np.clip(im.astype(np.float32) * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30), 0, 255).astype(
                    np.uint8
                )
                out.append(embed(im, jb[None])[0])
            faces[f"{name}#{k}"] = out
    keys = sorted(faces)
    perm = rng.permutation(len(keys))
    train_keys = {keys[i] for i in perm[: len(keys) // 2]}

    scenes = {
        n: getattr(skd, n)()
        for n in ("coffee", "chelsea", "rocket", "coins", "horse", "camera", "page", "brick", "grass", "gravel")
    }
    non = []
    for im in scenes.values():
        im = np.ascontiguousarray(np.dstack([im] * 3) if im.ndim == 2 else im[..., :3])
        im = im.astype(np.uint8) if im.dtype != bool else (im * 255).astype(np.uint8)
        f = detect(im, 0.02)
        if len(f):
            non.append(embed(im, f.boxes[:10]))
        h, w = im.shape[:2]
        s = rng.uniform(0.1, 0.5, 15) * min(h, w)
        x0, y0 = rng.uniform(0, w - s), rng.uniform(0, h - s)
        non.append(embed(im, np.stack([x0, y0, x0 + s, y0 + s], 1)))
    astro = decode_image(demo.photos()["astronaut.png"].read_bytes(), DecodeConfig(long_side=0)).pixels
    garbage = [
        rng.integers(0, 256, (200, 200, 3), dtype=np.uint8),
        np.full((200, 200, 3), 128, np.uint8),
        cv2.GaussianBlur(astro, (0, 0), 25),
        astro[::-1].copy(),
    ]
    for g in garbage:
        non.append(embed(g, np.array([[20, 20, 180, 180], [40, 30, 150, 170]], np.float32)))
    x_non = np.concatenate(non)

    results = {}
    protocols = {
        # every face in training (half of its chips), the other half of its chips as the test faces
        "seen faces": (
            np.array([e for k in keys for e in faces[k][::2]], np.float32),
            np.array([e for k in keys for e in faces[k][1::2]], np.float32),
        ),
        # half the faces in training, the other half's chips as the test faces (people never seen)
        "unseen faces": (
            np.array([e for k in keys if k in train_keys for e in faces[k]], np.float32),
            np.array([e for k in keys if k not in train_keys for e in faces[k]], np.float32),
        ),
    }
    for name, (x_train, x_face) in protocols.items():
        y = np.r_[np.zeros(len(x_face)), np.ones(len(x_non))]
        x_test = np.concatenate([x_face, x_non])
        model = train_drocc(x_train, DROCCConfig(seed=seed))
        auc = roc_auc_score(y, model.anomaly_scores(x_test))
        results[name] = float(auc)
        # the same standardised inputs for the baselines: is the protocol learnable at all?
        mu, sd = x_train.mean(0), np.where(x_train.std(0) > 1e-6, x_train.std(0), 1.0)
        z_train, z_test = (x_train - mu) / sd, (x_test - mu) / sd
        base = {
            "OneClassSVM": roc_auc_score(
                y, -OneClassSVM(kernel="rbf", gamma="scale", nu=0.1).fit(z_train).decision_function(z_test)
            ),
            "IsolationForest": roc_auc_score(
                y, -IsolationForest(random_state=seed).fit(z_train).decision_function(z_test)
            ),
            "distance to the mean": roc_auc_score(y, np.linalg.norm(z_test, axis=1)),
        }
        results[f"{name} baselines"] = {k: float(v) for k, v in base.items()}
        print(
            f"{name:12s}: trained on {len(x_train)} face chips; test {len(x_face)} face chips vs {len(x_non)} "
            "non-faces: "
            f"AUC DROCC {auc:.3f}; " + ", ".join(f"{k} {v:.3f}" for k, v in base.items())
        )
    return results


if __name__ == "__main__":
    record.run(main, "bench.accuracy.drocc_faces")
