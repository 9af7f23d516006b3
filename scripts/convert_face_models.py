"""Helpers of scripts/convert-face-models.sh (run inside its venv).

patch-tfjs SRC DST     copy a TF.js graph-model JSON, giving every `_FusedConv2D` node the `TArgs` attribute
                       (num_args × DT_FLOAT) that tf2onnx needs to convert it.
canonicalize PATH      rename every internal tensor and node by its position in the graph and fix the doc string,
                       so that two conversions give byte-identical files (tf2onnx's constant-folding names are
                       not deterministic).
rename-attention PATH  give the attention mesh's ONNX outputs their MediaPipe names; tf2onnx keeps TF.js's
                       `Identity_k:0` for four of them (which is which was checked against the 468-point mesh:
                       the left-eye contour starts at mesh point 33, the right one at 263).
"""
import json
import sys

ATTENTION_OUTPUTS = {
    "Identity_1:0": "output_left_eye",
    "Identity_5:0": "output_right_eye",
    "Identity_2:0": "output_left_iris",
    "Identity_6:0": "output_right_iris",
}


def patch_tfjs(src, dst):
    with open(src) as f:
        model = json.load(f)
    patched = 0
    for node in model["modelTopology"]["node"]:
        if node["op"] == "_FusedConv2D":
            args = int(node["attr"].get("num_args", {}).get("i", "0"))
            node["attr"]["TArgs"] = {"list": {"type": ["DT_FLOAT"] * args}}
            patched += 1
    with open(dst, "w") as f:
        json.dump(model, f)
    print(f"patched {patched} _FusedConv2D nodes")


def rename_attention(path):
    import onnx

    model = onnx.load(path)
    for node in model.graph.node:
        node.output[:] = [ATTENTION_OUTPUTS.get(x, x) for x in node.output]
        node.input[:] = [ATTENTION_OUTPUTS.get(x, x) for x in node.input]
    for out in model.graph.output:
        out.name = ATTENTION_OUTPUTS.get(out.name, out.name)
    names = sorted(o.name for o in model.graph.output)
    expected = sorted(["output_faceflag", "output_mesh_identity", "output_lips", *ATTENTION_OUTPUTS.values()])
    if names != expected:
        sys.exit(f"unexpected attention outputs {names}")
    onnx.checker.check_model(model)
    onnx.save(model, path)


def canonicalize(path, source):
    import hashlib
    import heapq

    import onnx

    model = onnx.load(path)
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    inits = {t.name: t for t in graph.initializer}
    content = {n: "I" + hashlib.sha256(t.SerializeToString()[len(t.name) :]).hexdigest() for n, t in inits.items()}
    content.update({v.name: "G" + v.name for v in graph.input})

    # Deterministic topological order: among ready nodes, the smallest (op, attributes, input identities) first,
    # where an input's identity is its producer's position, its initializer's content hash, or its input name.
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    consumers = {}
    pending = []
    for i, node in enumerate(graph.node):
        deps = {producer[x] for x in node.input if x in producer}
        pending.append(len(deps))
        for d in deps:
            consumers.setdefault(d, []).append(i)
    emitted_pos = {}
    ident = dict(content)

    def key(i):
        node = graph.node[i]
        attrs = b"".join(a.SerializeToString() for a in node.attribute)
        return (node.op_type, hashlib.sha256(attrs).hexdigest(), tuple(ident.get(x, "?") for x in node.input), i)

    ready = [key(i) for i, n in enumerate(pending) if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        *_, i = heapq.heappop(ready)
        emitted_pos[i] = len(order)
        order.append(i)
        for k, out in enumerate(graph.node[i].output):
            ident[out] = f"N{emitted_pos[i]}.{k}"
        for c in consumers.get(i, []):
            pending[c] -= 1
            if pending[c] == 0:
                heapq.heappush(ready, key(c))
    if len(order) != len(graph.node):
        sys.exit("graph has a cycle")
    nodes = [graph.node[i] for i in order]

    mapping = {}

    def canon(name):
        if not name or name in keep:
            return name
        if name not in mapping:
            mapping[name] = f"t{len(mapping)}"
        return mapping[name]

    new_nodes = []
    for i, node in enumerate(nodes):
        node = onnx.NodeProto.FromString(node.SerializeToString())
        node.input[:] = [canon(x) for x in node.input]
        node.output[:] = [canon(x) for x in node.output]
        node.name = f"n{i}_{node.op_type}"
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    new_inits = []
    for name, t in inits.items():
        t.name = canon(name)
        new_inits.append(t)
    new_inits.sort(key=lambda t: int(t.name[1:]) if t.name[1:].isdigit() else -1)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    del graph.value_info[:]
    graph.doc_string = f"converted from {source}"
    onnx.checker.check_model(model)
    onnx.save(model, path)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "patch-tfjs":
        patch_tfjs(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "canonicalize":
        canonicalize(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "rename-attention":
        rename_attention(sys.argv[2])
    else:
        sys.exit(__doc__)
