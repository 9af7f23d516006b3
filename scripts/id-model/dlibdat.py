"""Minimal reader for dlib's serialized dnn (dlib_face_recognition_resnet_model_v1.dat).
Scans the stream for length-prefixed layer-version strings (con_4, affine_, fc_...,
max_pool_, avg_pool_, relu_, add_prev_, ...) and decodes the parameter tensors of
con_ / affine_ / fc_ layers.  Layers are stored output->input (dlib serializes the
outermost layer first); we return them in that file order."""
import re, struct, numpy as np

class R:
    def __init__(s, d, p=0): s.d, s.p = d, p
    def byte(s):
        b = s.d[s.p]; s.p += 1; return b
    def int_(s):                     # dlib pack_int / pack_uint
        c = s.byte(); n = c & 0x0F; neg = c & 0x80
        v = int.from_bytes(s.d[s.p:s.p+n], 'little'); s.p += n
        return -v if neg else v
    def str_(s):
        n = s.int_(); v = s.d[s.p:s.p+n].decode('ascii'); s.p += n; return v
    def float_(s):                   # dlib float_details: int64 mantissa, int16 exponent
        m = s.int_(); e = s.int_(); return m * 2.0**e
    def tensor(s):
        ver = s.int_(); assert ver == 2, ver
        ns, k, nr, nc = s.int_(), s.int_(), s.int_(), s.int_()
        n = ns*k*nr*nc
        a = np.frombuffer(s.d, '<f4', n, s.p).copy(); s.p += 4*n
        return a.reshape(ns, k, nr, nc)
    def alias(s):                    # alias_tensor: version, ns,k,nr,nc
        ver = s.int_(); return [s.int_() for _ in range(4)]

KNOWN = ('con_', 'affine_', 'fc_', 'relu_', 'add_prev_', 'avg_pool_', 'max_pool_',
         'input_rgb', 'loss_metric_', 'tag', 'skip')

def layers(path):
    d = open(path, 'rb').read()
    out = []
    # find candidate strings: 0x01 <len> <ascii>
    for m in re.finditer(rb'\x01([\x03-\x20])([a-z][a-z_0-9]{2,31})', d):
        n = m.group(1)[0]; s = m.group(2)[:n]
        if len(s) != n: continue
        name = s.decode()
        if not name.startswith(KNOWN): continue
        r = R(d, m.end(1) + n)
        L = {'name': name, 'pos': m.start()}
        try:
            if name.startswith('con_'):
                params = r.tensor().ravel()
                nf, nr, nc, sy, sx, py, px = [r.int_() for _ in range(7)]
                fa = r.alias(); ba = r.alias()
                nw = nf * fa[1] * nr * nc  # filters alias: (nf, k, nr, nc)
                L.update(W=params[:fa[0]*fa[1]*fa[2]*fa[3]].reshape(fa), b=params[len(params)-nf:],
                         stride=(sy, sx), pad=(py, px), nf=nf, k=(nr, nc), falias=fa, balias=ba)
                assert len(params) == int(np.prod(fa)) + nf, (len(params), fa, nf)
            elif name.startswith('affine_'):
                params = r.tensor().ravel()
                ga = r.alias(); be = r.alias(); mode = r.int_()
                C = len(params)//2
                L.update(gamma=params[:C], beta=params[C:], mode=mode, galias=ga)
            elif name.startswith('fc_'):
                nout = r.int_(); nin = r.int_()
                params = r.tensor().reshape(-1)
                W = params[:nin*nout].reshape(nin, nout)   # y = x @ W (dlib layout)
                L.update(W=W, nout=nout, nin=nin, extra=len(params)-nin*nout)
            elif name.startswith('input_rgb'):
                L.update(avg=[r.float_() for _ in range(3)])
            elif name.startswith(('max_pool_', 'avg_pool_')):
                L.update(nr=r.int_(), nc=r.int_(), sy=r.int_(), sx=r.int_(), py=r.int_(), px=r.int_())
        except Exception as e:
            L['err'] = repr(e)
        out.append(L)
    return out

if __name__ == '__main__':
    import sys
    for L in layers(sys.argv[1]):
        print(L['pos'], L['name'], {k: (v.shape if hasattr(v, 'shape') else v) for k, v in L.items() if k not in ('name', 'pos')})
