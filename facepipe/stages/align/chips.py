"""Face chips: where each face is cut from its image, and the batched warp that cuts it.

Two steps, so that many faces (of many images) are warped in one call:

1. Geometry -> :class:`ChipRegion` per face: the pixels the chip is sampled from (a crop of the
   image, reduced by dlib's 2x Gaussian pyramid when the chip is much smaller than the face, so
   large faces do not alias) and the chip -> region affine.
   - :func:`dlib_chip_regions` reproduces dlib's ``get_face_chip(img, shape, size, padding)``
     exactly: a similarity fit of dlib's 5-point mean face onto the landmarks gives a rotated
     extraction rectangle (``get_face_chip_details``), sampled the way ``extract_image_chips``
     does (same pyramid, same level coordinates, same corner mapping).
   - :func:`template_chip_regions` fits 5 landmarks onto a fixed template (insightface's ArcFace
     112x112 one by default) with a least-squares similarity.
2. :func:`sample_chips`: bilinear sampling of all regions in one batched pass, on any device;
   like dlib, a chip pixel whose 2x2 neighbourhood leaves the image is 0 and values are truncated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: dlib's 5-point mean face in [0, 1]^2 (``get_face_chip_details``), in dlib's point order.
DLIB_MEAN_FACE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)

#: The ``faces`` table's 5 landmarks (eye centres, nose tip, mouth corners; see
#: :data:`facepipe.schema.LANDMARK_NAMES`) on dlib's 68-point mean face (``get_face_chip_details``):
#: eye centre = mean of the eye's 6 points (36-41, 42-47), nose tip = point 30, mouth corners = 48, 54.
#: Lets a dlib chip be cut straight from a detector's landmarks, without the shape predictor.
DLIB_MEAN_FACE_DETECTOR_5 = np.array(
    [
        [
            np.mean([0.121737, 0.187122, 0.265825, 0.334606, 0.260918, 0.182743]),
            np.mean([0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077]),
        ],
        [
            np.mean([0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335]),
            np.mean([0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099]),
        ],
        [0.490127, 0.515625],
        [0.254149, 0.780233],
        [0.726104, 0.780233],
    ]
)

#: insightface's ArcFace alignment template for 112x112 chips, in the ``faces`` landmark order
#: (left eye, right eye, nose, mouth left, mouth right; "left" = smaller x).
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama, no reflection) mapping src (N, P, 2) onto dst (N, P, 2):
    (N, 2, 3) affine matrices, float64."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(1, keepdims=True), dst.mean(1, keepdims=True)
    s, d = src - ms, dst - md
    var_s = (s**2).sum((1, 2)) / src.shape[1]
    cov = np.einsum("npi,npj->nij", d, s) / src.shape[1]
    u, sv, vt = np.linalg.svd(cov)
    S = np.tile(np.eye(2), (len(src), 1, 1))
    S[np.linalg.det(cov) < 0, 1, 1] = -1
    R = u @ S @ vt
    c = np.where(var_s > 0, (sv * S[:, [0, 1], [0, 1]]).sum(1) / np.where(var_s > 0, var_s, 1), 1.0)
    A = c[:, None, None] * R
    t = md[:, 0] - np.einsum("nij,nj->ni", A, ms[:, 0])
    return np.concatenate([A, t[:, :, None]], 2)


def _affine_from_3(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(N, 2, 3) affines taking 3 src points (N, 3, 2) exactly onto dst (N, 3, 2)."""
    n = len(src)
    X = np.concatenate([src, np.ones((n, 3, 1))], 2)  # (N, 3, 3)
    return np.linalg.solve(X, dst).transpose(0, 2, 1)


def dlib_chip_geometry(
    points: np.ndarray, size: int = 150, padding: float = 0.25, mean_face: np.ndarray = DLIB_MEAN_FACE_5
) -> list[tuple[np.ndarray, float, float]]:
    """dlib's ``get_face_chip_details`` for shapes (N, P, 2) whose points correspond to
    ``mean_face`` (P, 2) in [0, 1]^2: per face the extraction rectangle's centre (x, y), its width
    (image pixels, counted dlib's way) and its angle."""
    points = np.asarray(points, np.float64).reshape(-1, len(mean_face), 2)
    if len(points) == 0:
        return []
    chip_pts = (padding + mean_face) / (2 * padding + 1) * size
    T = similarity_transform(np.repeat(chip_pts[None], len(points), 0), points)  # chip -> image
    out = []
    for t in T:
        p = t[:, :2] @ np.array([1.0, 0.0])  # rotation and scale of the fit
        centre = t[:, :2] @ np.array([size / 2, size / 2]) + t[:, 2]
        out.append((centre, size * float(np.hypot(*p)), float(np.arctan2(p[1], p[0]))))
    return out


def template_chip_transforms(
    landmarks: np.ndarray, template: np.ndarray = ARCFACE_TEMPLATE_112, size: int = 112
) -> np.ndarray:
    """Chip -> image affines (N, 2, 3) fitting 5 landmarks (N, 5, 2) onto ``template`` (given for a
    112-pixel chip; scaled to ``size``)."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    if len(lm) == 0:
        return np.zeros((0, 2, 3))
    tpl = np.asarray(template, np.float64) * (size / 112.0)
    return similarity_transform(np.repeat(tpl[None], len(lm), 0), lm)


_PYR_TAPS = np.array([1, 4, 6, 4, 1], np.int32)


def pyr_down(image: np.ndarray) -> np.ndarray:
    """dlib's ``pyramid_down<2>`` of an (H, W, 3) uint8 image: 5-tap [1 4 6 4 1] filter in both
    directions over the valid region, every other pixel kept, integer division by 256.
    Output ((H - 3) // 2, (W - 3) // 2, 3); pixel (x, y) is centred on input (2x + 2, 2y + 2)."""
    h, w = image.shape[:2]
    if h <= 8 or w <= 8:
        return np.zeros((0, 0, 3), np.uint8)
    wo, ho = (w - 3) // 2, (h - 3) // 2
    x = image.astype(np.int32)
    rows = sum(_PYR_TAPS[k] * x[:, k : k + 2 * wo : 2] for k in range(5))  # (H, wo, 3)
    out = sum(_PYR_TAPS[k] * rows[k : k + 2 * ho : 2] for k in range(5))  # (ho, wo, 3)
    return (out // 256).astype(np.uint8)


def _point_down(p: np.ndarray) -> np.ndarray:
    # dlib's pyramid_down<2>::point_down, offsets included (its level coordinates)
    return p / 2.0 - np.array([1.25, 0.75])


def _drect_area(tl: np.ndarray, br: np.ndarray) -> float:
    # dlib counts a rectangle's sides inclusively: width = right - left + 1
    return float(max(br[0] - tl[0] + 1, 0) * max(br[1] - tl[1] + 1, 0))


def _rotate(points: np.ndarray, centre: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    d = points - centre
    return np.stack([c * d[..., 0] - s * d[..., 1], s * d[..., 0] + c * d[..., 1]], -1) + centre


@dataclass(frozen=True)
class ChipRegion:
    """Where one chip is sampled from: ``pixels`` (a crop of the image, possibly pyramid-reduced)
    and the chip -> ``pixels`` affine ``M`` (2, 3)."""

    pixels: np.ndarray
    M: np.ndarray


def dlib_chip_region(
    image: np.ndarray, rect_centre: np.ndarray, rect_size: float, angle: float, size: int
) -> ChipRegion:
    """dlib's ``extract_image_chip`` up to the final bilinear sampling, for one chip whose
    (unrotated) extraction rectangle is ``rect_size`` wide around ``rect_centre``."""
    h, w = image.shape[:2]
    half = (rect_size - 1) / 2
    tl, br = rect_centre - half, rect_centre + half
    # pyramid depth: go down while the region, halved once more, still has more pixels than the chip
    halvings, grow = 0, 2.0
    t2, b2 = _point_down(tl), _point_down(br)
    while _drect_area(t2, b2) > size * size:
        halvings += 1
        grow = grow * 2 + 2
        t2, b2 = _point_down(t2), _point_down(b2)
    corners = np.array([tl, [br[0], tl[1]], [tl[0], br[1]], br])
    rot = _rotate(corners, rect_centre, angle)
    g = grow
    bl_ = np.floor(np.maximum(rot.min(0) - g, 0) + 0.5).astype(np.int64)
    br_ = np.floor(np.minimum(rot.max(0) + g, [w - 1, h - 1]) + 0.5).astype(np.int64)
    crop = image[bl_[1] : br_[1] + 1, bl_[0] : br_[0] + 1]
    rtl, rbr = tl - bl_, br - bl_
    for _ in range(halvings):
        crop = pyr_down(crop)
        rtl, rbr = _point_down(rtl), _point_down(rbr)
    centre = (rtl + rbr) / 2
    dst = _rotate(np.array([rtl, [rbr[0], rtl[1]], [rtl[0], rbr[1]]]), centre, angle)
    src = np.array([[0, 0], [size - 1, 0], [0, size - 1]], np.float64)
    return ChipRegion(crop, _affine_from_3(src[None], dst[None])[0])


def sample_chips(regions: list[ChipRegion], size: int, device: str | torch.device = "cpu") -> np.ndarray:
    """Bilinear-sample every region's chip in one batched pass on ``device``: (N, size, size, 3) uint8.

    All regions are packed into one flat pixel buffer (no padding to a common size), the chip
    pixels' source coordinates and bilinear weights are computed for the whole batch at once, and
    the four neighbours are gathered from the buffer. Arithmetic is dlib's ``interpolate_bilinear``
    in float64: a chip pixel whose 2x2 neighbourhood leaves its region is 0, values are truncated.
    """
    n = len(regions)
    if n == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    dev = torch.device(device)
    sizes = np.array([r.pixels.shape[:2] for r in regions], np.int64)  # (N, 2) h, w
    offsets = np.concatenate([[0], np.cumsum(sizes[:, 0] * sizes[:, 1])[:-1]])
    flat = torch.from_numpy(np.concatenate([np.ascontiguousarray(r.pixels).reshape(-1, 3) for r in regions])).to(dev)
    A = torch.from_numpy(np.stack([r.M for r in regions])).to(dev)  # (N, 2, 3) chip -> region pixels
    ar = torch.arange(size, dtype=torch.float64, device=dev)
    xs, ys = ar[None, None, :], ar[None, :, None]
    px = A[:, 0, 0, None, None] * xs + A[:, 0, 1, None, None] * ys + A[:, 0, 2, None, None]  # (N, S, S)
    py = A[:, 1, 0, None, None] * xs + A[:, 1, 1, None, None] * ys + A[:, 1, 2, None, None]
    left, top = px.floor(), py.floor()
    # one row per chip pixel from here on: (N*S*S, 1) weights against (N*S*S, 3) values
    fx, fy = (px - left).reshape(-1, 1), (py - top).reshape(-1, 1)
    h = torch.from_numpy(sizes[:, 0]).to(dev)[:, None, None]
    w = torch.from_numpy(sizes[:, 1]).to(dev)[:, None, None]
    left, top = left.long(), top.long()
    inside = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    idx = (torch.from_numpy(offsets).to(dev)[:, None, None] + torch.where(inside, top * w + left, 0)).reshape(-1)
    w = w.expand_as(inside).reshape(-1)

    def at(i: torch.Tensor) -> torch.Tensor:
        return flat.index_select(0, i).to(torch.float64)

    tl, tr, bl, br = at(idx), at(idx + 1), at(idx + w), at(idx + w + 1)
    val = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)
    val.mul_(inside.reshape(-1, 1))
    # the tiny bias keeps rounding noise of the geometry (1e-14 px) from truncating 37.0 to 36
    chips = val.add_(1e-6).floor_().clamp_(0, 255).to(torch.uint8)
    return chips.reshape(n, size, size, 3).cpu().numpy()


def dlib_chip_regions(
    image: np.ndarray,
    points: np.ndarray,
    size: int = 150,
    padding: float = 0.25,
    mean_face: np.ndarray = DLIB_MEAN_FACE_5,
) -> list[ChipRegion]:
    """Sampling regions of dlib's ``get_face_chip(image, shape, size, padding)`` for every shape of one image."""
    return [dlib_chip_region(image, *geo, size) for geo in dlib_chip_geometry(points, size, padding, mean_face)]


def dlib_face_chips(
    image: np.ndarray, points: np.ndarray, size: int = 150, padding: float = 0.25, device: str | torch.device = "cpu"
) -> np.ndarray:
    """dlib's ``get_face_chip(image, shape, size, padding)`` for every 5-point dlib shape (N, 5, 2)
    of one image, sampled in one batched call: (N, size, size, 3) uint8."""
    return sample_chips(dlib_chip_regions(image, points, size, padding), size, device)


def template_chip_regions(
    image: np.ndarray, landmarks: np.ndarray, template: np.ndarray = ARCFACE_TEMPLATE_112, size: int = 112
) -> list[ChipRegion]:
    """Sampling regions of chips whose 5 landmarks (N, 5, 2) are fitted onto ``template`` (112-px coordinates)."""
    M = template_chip_transforms(landmarks, template, size)
    regions = []
    for m in M:
        scale = float(np.hypot(m[0, 0], m[1, 0]))
        angle = float(np.arctan2(m[1, 0], m[0, 0]))
        # the chip's own square, expressed as dlib's extraction rectangle so large faces get the
        # same anti-aliasing pyramid as dlib chips
        centre = m[:, :2] @ np.array([(size - 1) / 2, (size - 1) / 2]) + m[:, 2]
        regions.append(dlib_chip_region(image, centre, (size - 1) * scale + 1, angle, size))
    return regions
