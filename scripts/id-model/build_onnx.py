"""Build an ONNX graph of dlib's face-recognition ResNet from dlib_face_recognition_resnet_model_v1.dat.
Usage: build_onnx.py DAT OUT.onnx
Layer sequence in the file (input -> output):
  input_rgb_image_sized(mean) ; con7x7/2 affine relu max_pool3x3/2 ;
  residual blocks: con affine relu con affine [avg_pool2x2/2 on block input] add_prev relu ;
  avg_pool_everything ; fc_no_bias(256->128)."""
import os, sys, numpy as np, onnx
from onnx import helper as h, TensorProto as TP, numpy_helper as nh
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dlibdat import layers

DOC = ('dlib_face_recognition_resnet_model_v1 (Davis E. King, dlib-models, CC0 1.0) converted to ONNX. '
       'Input "image": RGB float32 NCHW [N,3,150,150], pixel values 0..255 (dlib mean subtraction and /256 are inside the graph); '
       'the crop must be dlib.get_face_chip(img, shape5, size=150, padding=0.25) (5-point similarity alignment). '
       'Outputs: "embedding" = raw dlib 128-D descriptor (same-person if euclidean distance < 0.6), '
       '"embedding_unit" = embedding / ||embedding||.')

def build(dat):
    Ls = [L for L in layers(dat) if not L['name'].startswith('loss')]
    bad = [L for L in Ls if 'err' in L]; assert not bad, bad
    names = [L['name'] for L in Ls]
    nodes, inits = [], []
    def const(name, arr, dt=np.float32):
        inits.append(nh.from_array(np.ascontiguousarray(arr, dtype=dt), name)); return name
    def node(op, ins, out, **kw):
        nodes.append(h.make_node(op, ins, [out], name=out, **kw)); return out
    ci = [0]
    H = [150]   # current spatial size (square)
    def conv(x, L, A):
        g, be = A['gamma'], A['beta']
        Wf = L['W'] * g[:, None, None, None]; bf = L['b'] * g + be
        k = ci[0]; ci[0] += 1
        (py, px), (sy, sx) = L['pad'], L['stride']
        H[0] = (H[0] + 2 * py - L['k'][0]) // sy + 1
        return node('Conv', [x, const(f'conv{k}.weight', Wf), const(f'conv{k}.bias', bf)], f'conv{k}',
                    kernel_shape=list(L['k']), strides=[sy, sx], pads=[py, px, py, px]), L['nf']
    it = iter(Ls)
    L = next(it); assert L['name'] == 'input_rgb_image_sized'
    x = node('Sub', ['image', const('mean_rgb', np.array(L['avg']).reshape(1, 3, 1, 1))], 'centered')
    x = node('Mul', [x, const('inv256', np.array(1 / 256.))], 'normalized')
    L = next(it); A = next(it); assert L['name'].startswith('con_') and A['name'].startswith('affine_')
    x, ch = conv(x, L, A)
    assert next(it)['name'].startswith('relu_'); x = node('Relu', [x], 'stem_relu')
    P = next(it); assert P['name'].startswith('max_pool_')
    H[0] = (H[0] + 2 * P['py'] - P['nr']) // P['sy'] + 1
    x = node('MaxPool', [x], 'stem_pool', kernel_shape=[P['nr'], P['nc']], strides=[P['sy'], P['sx']], pads=[P['py'], P['px']] * 2)
    b = 0
    for L in it:
        if L['name'].startswith('con_'):
            inp, cin, hin = x, ch, H[0]
            A = next(it); y, _ = conv(inp, L, A)
            assert next(it)['name'].startswith('relu_'); y = node('Relu', [y], f'b{b}_relu1')
            L2 = next(it); A2 = next(it); y, ch = conv(y, L2, A2)
            nx = next(it); sc = inp
            if nx['name'].startswith('avg_pool_'):
                sc = node('AveragePool', [inp], f'b{b}_pool', kernel_shape=[nx['nr'], nx['nc']], strides=[nx['sy'], nx['sx']])
                hs = (hin - nx['nr']) // nx['sy'] + 1
                nx = next(it)
                if hs != H[0]:
                    # dlib add_prev_: output has the max of both sizes; tt::add treats the
                    # non-overlapping (bottom/right) elements of the smaller input as zeros
                    assert hs > H[0]
                    y = node('Pad', [y, const(f'b{b}_ypads', [0, 0, 0, 0, 0, 0, hs - H[0], hs - H[0]], np.int64)], f'b{b}_ypad')
                    H[0] = hs
            if cin != ch:   # dlib add_prev: missing channels of the shortcut are treated as zeros
                sc = node('Pad', [sc, const(f'b{b}_pads', [0, 0, 0, 0, 0, ch - cin, 0, 0], np.int64)], f'b{b}_pad')
            assert nx['name'].startswith('add_prev_')
            y = node('Add', [y, sc], f'b{b}_add')
            assert next(it)['name'].startswith('relu_'); x = node('Relu', [y], f'b{b}_out'); b += 1
        elif L['name'].startswith('avg_pool_'):
            assert L['nr'] == 0  # avg_pool_everything
            x = node('GlobalAveragePool', [x], 'gap'); x = node('Flatten', [x], 'features', axis=1)
        elif L['name'].startswith('fc_'):
            x = node('MatMul', [x, const('fc.weight', L['W'])], 'embedding')
        else:
            raise ValueError(L['name'])
    n = node('ReduceL2', ['embedding'], 'emb_norm', axes=[1], keepdims=1)
    n = node('Max', [n, const('eps', np.array(1e-12))], 'emb_norm_c')
    node('Div', ['embedding', n], 'embedding_unit')
    g = h.make_graph(nodes, 'dlib_face_recognition_resnet_v1',
        [h.make_tensor_value_info('image', TP.FLOAT, ['N', 3, 150, 150])],
        [h.make_tensor_value_info('embedding', TP.FLOAT, ['N', 128]),
         h.make_tensor_value_info('embedding_unit', TP.FLOAT, ['N', 128])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid('', 13)], producer_name='convert_id_model', doc_string=DOC)
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m, b, ci[0]

if __name__ == '__main__':
    m, nb, nc = build(sys.argv[1])
    onnx.save(m, sys.argv[2])
    print('saved', sys.argv[2], 'residual blocks', nb, 'convs', nc)
