"""Face alignment for the dlib face-recognition ONNX model, driven by MediaPipe FaceMesh landmarks.
Reproduces dlib.get_face_chip(img, shape5, size=150, padding=0.25): a least-squares similarity transform
(rotation+uniform scale+translation, Umeyama, no reflection) mapping 5 template points of the 150x150 chip
onto 5 image landmarks, then bilinear sampling (with supersampling to stand in for dlib's pyramid when downscaling)."""
import numpy as np

# dlib get_face_chip_details 5-point template (unit square, before padding), order = dlib shape_predictor_5 parts:
# 0: eye on image-right, outer corner; 1: same eye inner; 2: eye on image-left, outer; 3: same eye inner; 4: nose base
DLIB5_TEMPLATE = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                           [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                           [0.4901123135679, 0.6277975316475]])
# MediaPipe FaceMesh (468) indices for the same 5 points (subject's left eye = image right):
MP_DLIB5 = [263, 362, 33, 133, 2]

def template_points(size=150, padding=0.25):
    return (padding + DLIB5_TEMPLATE) / (2 * padding + 1) * size

def similarity(src, dst):
    """Least-squares similarity T with T(src) ~ dst (Umeyama 1991). Returns 2x3 matrix."""
    ms, md = src.mean(0), dst.mean(0); s, d = src - ms, dst - md
    cov = d.T @ s / len(src); U, S, Vt = np.linalg.svd(cov)
    D = np.eye(2)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0: D[1, 1] = -1
    R = U @ D @ Vt; var = (s ** 2).sum() / len(src)
    c = np.trace(np.diag(S) @ D) / var
    A = c * R; t = md - A @ ms
    return np.hstack([A, t[:, None]])

def bilinear(img, x, y):
    H, W = img.shape[:2]
    x0 = np.floor(x).astype(int); y0 = np.floor(y).astype(int); fx = x - x0; fy = y - y0
    out = np.zeros(x.shape + (img.shape[2],), np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            ok = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)   # outside the image -> black (as dlib)
            v = img[np.clip(yi, 0, H - 1), np.clip(xi, 0, W - 1)] * ok[..., None]
            out += v * (wx * wy)[..., None]
    return out

def face_chip(img, pts5, size=150, padding=0.25, supersample=True):
    """img: HxWx3 uint8 RGB; pts5: 5x2 pixel coords in MP_DLIB5/dlib order. Returns size x size x 3 float (0..255)."""
    M = similarity(template_points(size, padding), np.asarray(pts5, np.float64))
    scale = np.hypot(M[0, 0], M[1, 0])           # image pixels per chip pixel
    k = max(1, int(np.ceil(scale))) if supersample else 1
    off = (np.arange(k) + 0.5) / k - 0.5
    acc = 0
    r, c = np.mgrid[0:size, 0:size].astype(np.float64)
    for oy in off:
        for ox in off:
            cc, rr = c + ox, r + oy
            acc = acc + bilinear(img.astype(np.float64), M[0, 0] * cc + M[0, 1] * rr + M[0, 2], M[1, 0] * cc + M[1, 1] * rr + M[1, 2])
    return acc / (k * k)

def mediapipe_pts5(lms, width, height, idx=MP_DLIB5):
    a = np.asarray(lms, np.float64)[idx, :2]
    return a * [width, height]
