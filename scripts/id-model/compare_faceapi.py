"""Sanity check: weights parsed from the dlib .dat vs face-api.js's (uint8-quantised) TF.js port of the same model."""
import json, sys, numpy as np
sys.path.insert(0, 'src'); from dlibdat import layers
fa = 'npm/vladmandic-face-api-1.7.15/package/model/'
man = json.load(open(fa + 'face_recognition_model-weights_manifest.json'))[0]
buf = open(fa + 'face_recognition_model.bin', 'rb').read(); off = 0; W = {}
for w in man['weights']:
    n = int(np.prod(w['shape'])); q = w.get('quantization')
    if q:
        a = np.frombuffer(buf, np.uint8, n, off).astype(np.float32) * q['scale'] + q['min']; off += n
    else:
        a = np.frombuffer(buf, np.float32, n, off); off += 4 * n
    W[w['name']] = (a.reshape(w['shape']), q['scale'] if q else 0)
Ls = layers(sys.argv[1])
convs = [L for L in Ls if L['name'].startswith('con_')]; affs = [L for L in Ls if L['name'].startswith('affine_')]
names = ['conv32_down/']
for lvl, nb in ((32, 3), (64, 4), (128, 3), (256, 4)):
    blocks = ([f'conv{lvl}_down'] if lvl != 32 else []) + [f'conv{lvl}_{i}' for i in range(1, nb + (1 if lvl == 32 else 0))]
    if lvl == 256: blocks = ['conv256_down', 'conv256_1', 'conv256_2', 'conv256_down_out']
    if lvl == 128: blocks = ['conv128_down', 'conv128_1', 'conv128_2']
    if lvl == 64: blocks = ['conv64_down', 'conv64_1', 'conv64_2', 'conv64_3']
    for b in blocks: names += [b + '/conv1/', b + '/conv2/']
assert len(names) == len(convs) == 29, (len(names), len(convs))
worst = 0
for nm, C, A in zip(names, convs, affs):
    f, s = W[nm + 'conv/filters']; tf_w = C['W'].transpose(2, 3, 1, 0)
    e = [np.abs(f - tf_w).max() / max(s, 1e-12), np.abs(W[nm + 'scale/weights'][0] - A['gamma']).max() / W[nm + 'scale/weights'][1],
         np.abs(W[nm + 'scale/biases'][0] - A['beta']).max() / W[nm + 'scale/biases'][1]]
    worst = max(worst, max(e))
fcw = [k for k in W if k.startswith('fc')]; fc = [L for L in Ls if L['name'].startswith('fc_')][0]
f, s = W[fcw[0]]; print('fc', fcw, f.shape, 'err/step', np.abs(f - fc['W']).max() / s if s else np.abs(f - fc['W']).max())
print('max |dlib - faceapi| in units of the uint8 quantisation step:', worst)
