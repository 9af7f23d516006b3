"""Verify the ONNX model against dlib's own Python implementation (needs `pip install dlib`).
1) dlib chip (get_face_chip, 150, 0.25) -> ONNX vs dlib.face_recognition_model_v1.compute_face_descriptor(chip)
2) dlib full pipeline descriptor vs ONNX on the MediaPipe-driven numpy chip (the app's recipe)
3) pixel distance between dlib 5-point landmarks and candidate MediaPipe indices."""
import glob, json, os, sys, numpy as np, dlib, onnxruntime as ort
from PIL import Image
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from align import face_chip, mediapipe_pts5, MP_DLIB5
IDX = [int(v) for v in os.environ["MP_IDX"].split(",")] if os.environ.get("MP_IDX") else MP_DLIB5
FX = '/work/shared/fixtures/faces'; M = sys.argv[2]
rec = dlib.face_recognition_model_v1(M + '/dlib_face_recognition_resnet_model_v1.dat')
sp = dlib.shape_predictor(M + '/shape_predictor_5_face_landmarks.dat'); det = dlib.get_frontal_face_detector()
sess = ort.InferenceSession(sys.argv[1])
cand = {0: [263, 359, 466], 1: [362, 398], 2: [33, 130, 246], 3: [133, 173], 4: [2, 94, 1, 19, 164, 97, 326]}
err = {(p, i): [] for p in cand for i in cand[p]}
d1, d2, c2 = [], [], []
for f in sorted(glob.glob(FX + '/images/*.png')):
    n = os.path.basename(f)[:-4]; img = np.asarray(Image.open(f).convert('RGB')); j = json.load(open(f'{FX}/mediapipe/{n}.json'))
    dets = det(img, 1)
    if not dets: print('dlib: no face', n); continue
    shp = sp(img, max(dets, key=lambda r: r.area()))
    ref = np.array(rec.compute_face_descriptor(img, shp))              # dlib default: 150px chip, padding .25
    chip = np.asarray(dlib.get_face_chip(img, shp, size=150, padding=0.25))
    ref_chip = np.array(rec.compute_face_descriptor(chip))
    e = sess.run(['embedding'], {'image': chip.transpose(2, 0, 1)[None].astype(np.float32)})[0][0]
    d1.append(np.abs(e - ref_chip).max())
    lm = np.asarray(j['face_mesh_468'])[:, :2] * [img.shape[1], img.shape[0]]
    pts = np.array([[shp.part(k).x, shp.part(k).y] for k in range(5)])
    iod = np.linalg.norm(pts[0] - pts[2])
    for p in cand:
        for i in cand[p]: err[(p, i)].append(np.linalg.norm(lm[i] - pts[p]) / iod)
    mchip = face_chip(img, mediapipe_pts5(j["face_mesh_468"], img.shape[1], img.shape[0], IDX))
    em = sess.run(['embedding'], {'image': mchip.transpose(2, 0, 1)[None].astype(np.float32)})[0][0]
    d2.append(np.linalg.norm(em - ref)); c2.append(em @ ref / np.linalg.norm(em) / np.linalg.norm(ref))
    print(f'{n:32s} onnx-vs-dlib(same chip) maxabs {d1[-1]:.2e} | mediapipe-chip vs dlib pipeline: eucl {d2[-1]:.3f} cos {c2[-1]:.4f}')
print(f'ONNX vs dlib on identical chips: max abs diff {max(d1):.2e} over {len(d1)} faces')
print(f'MediaPipe-aligned ONNX vs dlib pipeline: eucl mean {np.mean(d2):.3f} max {np.max(d2):.3f}; cosine mean {np.mean(c2):.4f} min {np.min(c2):.4f}')
print('MediaPipe index vs dlib 5-pt landmark, mean distance / inter-ocular(outer corners):')
for p in cand: print('  dlib part', p, ', '.join(f'mp{i}: {np.mean(err[(p, i)]):.3f}' for i in cand[p]))
