#!/usr/bin/env python3
"""Writes tiny PyTorch-format checkpoints for the checkpoint-reader tests (tests/data/checkpoints/).

Run from the repository root:  python3 scripts/make_test_checkpoints.py

It needs no torch: it reproduces what `torch.save` (zip format, pickle protocol 2) writes — a zip with
`<name>/data.pkl`, `<name>/data/<key>` raw little-endian storages, `<name>/byteorder` and `<name>/version` — using
CPython's own pickler with stand-ins registered under torch's names (`torch._utils._rebuild_tensor_v2`,
`torch._utils._rebuild_parameter`, `torch.FloatStorage`, …), so the opcode stream has the same shape as torch's:
persistent ids for storages, REDUCE calls for tensors and parameters, OrderedDict state dicts with a `_metadata`
BUILD. The expected values are written beside each file as JSON.
"""
import collections
import json
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

OUT = Path("tests/data/checkpoints")

torch_mod = types.ModuleType("torch")
utils_mod = types.ModuleType("torch._utils")
sys.modules["torch"] = torch_mod
sys.modules["torch._utils"] = utils_mod
torch_mod._utils = utils_mod


def _storage_class(name, fmt, size):
    cls = type(name, (), {"fmt": fmt, "size": size, "__module__": "torch"})
    setattr(torch_mod, name, cls)
    return cls


FloatStorage = _storage_class("FloatStorage", "<f", 4)
HalfStorage = _storage_class("HalfStorage", "<e", 2)
LongStorage = _storage_class("LongStorage", "<q", 8)


def _rebuild_tensor_v2(*args):
    raise RuntimeError("stand-in: never called while writing")


def _rebuild_parameter(*args):
    raise RuntimeError("stand-in: never called while writing")


for fn in (_rebuild_tensor_v2, _rebuild_parameter):
    fn.__module__ = "torch._utils"
    setattr(utils_mod, fn.__name__, fn)


class Storage:
    def __init__(self, cls, values):
        self.cls, self.values = cls, list(values)

    def raw(self):
        return b"".join(struct.pack(self.cls.fmt, v) for v in self.values)


class Tensor:
    """A view into a storage, reduced exactly like torch.Tensor in torch.save."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def __reduce_ex__(self, proto):
        return (_rebuild_tensor_v2,
                (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()))

    def values(self):
        out = []

        def rec(axis, base):
            if axis == len(self.size):
                out.append(self.storage.values[base])
                return
            for i in range(self.size[axis]):
                rec(axis + 1, base + i * self.stride[axis])

        rec(0, self.offset)
        return out


class Parameter(Tensor):
    def __init__(self, tensor):
        super().__init__(tensor.storage, tensor.offset, tensor.size, tensor.stride)
        self.inner = tensor

    def __reduce_ex__(self, proto):
        return (_rebuild_parameter, (self.inner, True, collections.OrderedDict()))


def contiguous(values, size):
    stride, acc = [], 1
    for d in reversed(size):
        stride.insert(0, acc)
        acc *= d
    return Tensor(Storage(FloatStorage, values), 0, size, stride)


def state_dict(items):
    sd = collections.OrderedDict(items)
    sd._metadata = collections.OrderedDict({"": {"version": 1}})
    return sd


def save(obj, path):
    storages = {}

    def persistent_id(o):
        if isinstance(o, Storage):
            key = storages.setdefault(id(o), (str(len(storages)), o))[0]
            return ("storage", o.cls, key, "cpu", len(o.values))
        return None

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            return persistent_id(o)

    buf = __import__("io").BytesIO()
    Pickler(buf, protocol=2).dump(obj)
    name = path.stem
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(f"{name}/data.pkl", buf.getvalue())
        z.writestr(f"{name}/byteorder", "little")
        for key, storage in sorted(storages.values()):
            z.writestr(f"{name}/data/{key}", storage.raw())
        z.writestr(f"{name}/version", "3\n")


def expected(sd):
    return {k: {"shape": list(t.size), "values": t.values()} for k, t in sd.items()}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    # A generator-style checkpoint: transposed (strided) view, two tensors sharing one storage at different
    # offsets, a Parameter, and unrelated top-level entries (optimizer state with plain values, an epoch).
    shared = Storage(FloatStorage, [0.5 * i - 3.0 for i in range(20)])
    base = contiguous([float(i) for i in range(6)], [2, 3])
    transposed = Tensor(base.storage, 0, [3, 2], [1, 3])
    gen = state_dict([
        ("conv.weight", Parameter(contiguous([0.25 * i for i in range(2 * 3 * 2 * 2)], [2, 3, 2, 2]))),
        ("conv.bias", contiguous([-1.0, 2.5], [2])),
        ("t.weight", transposed),
        ("shared.a", Tensor(shared, 2, [2, 2], [2, 1])),
        ("shared.b", Tensor(shared, 10, [5], [2])),
    ])
    ckpt = {
        "generator": gen,
        "optimizer_generator": {"param_groups": [{"lr": 2e-4, "betas": (0.5, 0.999), "amsgrad": False}]},
        "epoch": 7,
    }
    save(ckpt, OUT / "generator_small.pth")
    (OUT / "generator_small.json").write_text(json.dumps(expected(gen), indent=1))

    # A TSR-style checkpoint: `params` and `params_ema`, half-precision storage.
    half = Tensor(Storage(HalfStorage, [0.5, -1.25, 3.0, 0.0]), 0, [4], [1])
    ema = state_dict([("w", half)])
    save({"params": state_dict([("w", contiguous([9.0] * 4, [4]))]), "params_ema": ema}, OUT / "tsr_small.pth")
    (OUT / "tsr_small.json").write_text(json.dumps(expected(ema), indent=1))


if __name__ == "__main__":
    main()
