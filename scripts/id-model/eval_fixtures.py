"""Embed every fixture face with the ONNX model (MediaPipe-driven alignment) and print cosine statistics."""
import glob, json, os, sys, numpy as np, onnxruntime as ort
from PIL import Image
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from align import face_chip, mediapipe_pts5, MP_DLIB5
FX = os.environ.get('FIXTURES', '/work/shared/fixtures/faces')
onnx_path = sys.argv[1]; idx = [int(v) for v in sys.argv[2].split(',')] if len(sys.argv) > 2 else MP_DLIB5
sess = ort.InferenceSession(onnx_path)
def group(n):
    for g in ('imgs_train_0', 'imgs_0', 'final_0', 'synth_astronaut', 'astronaut'):
        if n.startswith(g): return g
names, embs, chips = [], [], []
for f in sorted(glob.glob(FX + '/images/*.png')):
    n = os.path.basename(f)[:-4]; j = json.load(open(f'{FX}/mediapipe/{n}.json'))
    img = np.asarray(Image.open(f).convert('RGB'))
    if not j.get('face_mesh_468'): print('no landmarks', n); continue
    chip = face_chip(img, mediapipe_pts5(j['face_mesh_468'], img.shape[1], img.shape[0], idx))
    x = chip.transpose(2, 0, 1)[None].astype(np.float32)
    e = sess.run(['embedding_unit'], {'image': x})[0][0]
    names.append(n); embs.append(e); chips.append(chip)
E = np.array(embs); C = E @ E.T; G = [group(n) for n in names]
os.makedirs('work', exist_ok=True); np.savez('work/onnx_mp_embs.npz', names=names, E=E)
# montage of chips
Image.fromarray(np.concatenate([np.concatenate(chips[i:i + 7], 1) if len(chips[i:i + 7]) == 7 else
    np.concatenate(chips[i:] + [np.zeros_like(chips[0])] * (7 - len(chips[i:])), 1) for i in range(0, len(chips), 7)], 0).clip(0, 255).astype(np.uint8)).save('work/chips.png')
gs = ['imgs_0', 'final_0', 'imgs_train_0', 'astronaut', 'synth_astronaut']
print('mean cosine (min) between groups; diagonal excludes self-pairs')
print(' ' * 16 + ''.join(f'{g:>18}' for g in gs))
for a in gs:
    row = []
    for b in gs:
        m = np.array([[C[i, k] for k in range(len(G)) if G[k] == b and k != i] for i in range(len(G)) if G[i] == a], dtype=object)
        vals = np.concatenate([np.asarray(r, float) for r in m]) if len(m) else np.array([])
        row.append(f'{vals.mean():7.3f} ({vals.min():6.3f})' if vals.size else '      -          ')
    print(f'{a:>16}' + ''.join(f'{r:>18}' for r in row))
raw = sess.run(['embedding'], {'image': np.stack([c.transpose(2, 0, 1) for c in chips]).astype(np.float32)})[0]
D = np.linalg.norm(raw[:, None] - raw[None], axis=-1)
same = np.array([[group(a) in ('imgs_0', 'final_0') and group(b) in ('imgs_0', 'final_0') or group(a).endswith('astronaut') and group(b).endswith('astronaut') or group(a) == group(b) for b in names] for a in names])
off = ~np.eye(len(names), dtype=bool)
print(f'raw dlib euclidean distance: same-person max {D[same & off].max():.3f}, different-person min {D[~same].min():.3f} (dlib threshold 0.6)')
print(f'cosine: same-person min {C[same & off].min():.3f}, different-person max {C[~same].max():.3f}')
