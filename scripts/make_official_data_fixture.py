#!/usr/bin/env python3
"""Writes tests/data/official_data/: a small dataset in the official inference layout and what the official code makes
of it, for `tests/reconstruct_cli.rs`.

Run outside CI, from the repository root, with torch (PyPI wheel, CPU is enough), torchvision, numpy, pillow,
opencv-python-headless, pyyaml and safetensors installed:

    python3 scripts/make_official_data_fixture.py /path/to/MetaPortrait [--shared ../shared]

The first argument is a checkout of the official repository (Meta-Portrait/MetaPortrait; made with 4c3c9e3). Nothing
of it is copied into this project: the script copies its `base_model/` into a temporary folder, narrows the widths
the reference hard-codes to the tiny fixture config (`shared/fixtures/generator/tiny_config.json`, by replacing the
few literal assignments listed in WIDTH_EDITS), and imports the official `PersonalDataset` and `Generator` from there.

The dataset: pictures are fixture faces from `shared/fixtures/faces/images` (two 512² sources and frames, so the
loader's Pillow bicubic resize is exercised, and one 256² frame); the 669 landmarks are synthetic (a seeded cloud
around a face-sized ellipse, moved per frame), since only the topology matters to the conditioning; identity vectors
are seeded Gaussian vectors that are NOT unit-norm (the official loader feeds them as stored), in two shapes (1, 32)
float32 and (32,) float64; one landmark file is float64. The pictures are not written here (the test copies them from
shared/ into the layout named in manifest.json); everything else of the layout is, under data/.

For every frame the official loader's tensors are saved under expected/<frame stem>/: the 8-bit pictures
source_line.png, driving_line.png, mouth_line.png and driving.png (each is k/255 exactly; the source picture goes
through the same resize as driving.png and is checked through the prediction), and
prediction16.png, the generator's `refine.prediction` (from the shared tiny weights) as 16 bits,
round((v + 1) / 2 * 65535) — within 1.6e-5 of the float — plus official_output.png, what inference.py's save_images
writes (clip(v * 255, 0, 255) truncated to uint8). Keypoints and identity vectors go into manifest.json.
"""
import argparse
import json
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

OUT = Path("tests/data/official_data")
SEED = 15

# (file under base_model/, literal in the reference, replacement built from the tiny config).
WIDTH_EDITS = [
    ("modules/LadderEncoder.py", "nef = 64", "nef = {ladder_nef}"),
    ("modules/spade.py", "nhidden = 128", "nhidden = {spade_hidden}"),
    ("modules/util.py", "nhidden = 128", "nhidden = {adain_hidden}"),
    ("modules/generator.py", "class_dim = 256", "class_dim = {id_dim}"),
    ("modules/generator.py", "label_nc_list = [512, 512, 512, 512, 256, 128, 64]", "label_nc_list = {label_nc_base}"),
    ("modules/generator.py", "conv_dim=32,", "conv_dim={spade_conv_dim},"),
]

# Layout file → fixture face it is copied from (relative to shared/fixtures/faces/images).
PICTURES = {
    "src_0.png": "imgs_0_00000002.png",
    "src_1.png": "final_0_00000002.png",
    "0/imgs/00000000.png": "imgs_0_00000003.png",
    "0/imgs/00000001.png": "imgs_0_00000004.png",
    "1/imgs/00000002.png": "final_0_00000005.png",
}
MAP = {"00000000.png": 0, "00000001.png": 0, "00000002.png": 1}


def synthetic_landmarks(rng, base, angle, shift):
    """669 points: `base` rotated about the centre, shifted and jittered, in [0, 1]."""
    c, s = np.cos(angle), np.sin(angle)
    centred = base - 0.5
    moved = np.stack([c * centred[:, 0] - s * centred[:, 1], s * centred[:, 0] + c * centred[:, 1]], 1) + 0.5
    moved += shift + rng.normal(0, 0.002, moved.shape)
    return np.clip(moved, 0.02, 0.98)


def write_layout(data, rng, id_dim):
    theta = np.eye(2, 3, dtype=np.float32)
    t = rng.uniform(0, 2 * np.pi, 669)
    r = np.sqrt(rng.uniform(0, 1, 669))
    base = np.stack([0.5 + 0.22 * r * np.cos(t), 0.52 + 0.28 * r * np.sin(t)], 1)
    for k in (0, 1):
        ldmk = synthetic_landmarks(rng, base, rng.normal(0, 0.05), rng.normal(0, 0.01, 2))
        np.save(data / f"src_{k}_ldmk.npy", ldmk.astype(np.float32 if k == 0 else np.float64))
        vec = rng.normal(0, 1, id_dim)
        np.save(data / f"src_{k}_id.npy", vec.astype(np.float32)[None] if k == 0 else vec.astype(np.float64))
        np.save(data / f"src_{k}_theta.npy", theta)
    for rel in PICTURES:
        if "/imgs/" not in rel:
            continue
        sub, _, name = rel.split("/")
        stem = name.rsplit(".", 1)[0]
        (data / sub / "ldmks").mkdir(parents=True, exist_ok=True)
        (data / sub / "thetas").mkdir(parents=True, exist_ok=True)
        ldmk = synthetic_landmarks(rng, base, rng.normal(0, 0.08), rng.normal(0, 0.02, 2))
        np.save(data / sub / "ldmks" / f"{stem}_ldmk.npy", ldmk.astype(np.float32))
        np.save(data / sub / "thetas" / f"{stem}_theta.npy", theta)
    with open(data / "src_map_dict.pkl", "wb") as f:
        pickle.dump(MAP, f)


def narrowed_base_model(official, tiny, into):
    base = into / "base_model"
    shutil.copytree(official / "base_model", base)
    values = dict(tiny)
    values["label_nc_base"] = "[" + ", ".join(str(v) for v in tiny["label_nc_base"]) + "]"
    for rel, old, new in WIDTH_EDITS:
        path = base / rel
        text = path.read_text()
        if text.count(old) != 1:
            sys.exit(f"{rel}: expected `{old}` once; is this the official commit 4c3c9e3?")
        path.write_text(text.replace(old, new.format(**values)))
    return base


def u8_png(path, chw):
    """Saves a [3, H, W] tensor of k/255 values as an RGB PNG, checking that it is exactly 8-bit."""
    levels = chw.numpy().transpose(1, 2, 0) * 255.0
    rounded = np.round(levels)
    assert np.abs(levels - rounded).max() < 1e-3, path
    cv2.imwrite(str(path), rounded.astype(np.uint8)[:, :, ::-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("official", type=Path, help="checkout of the official MetaPortrait repository")
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    args = ap.parse_args()
    global OUT
    OUT = OUT.resolve()  # the official loader needs the working directory moved to base_model/
    official = args.official.resolve()
    shared = args.shared.resolve()
    tiny = json.loads((shared / "fixtures/generator/tiny_config.json").read_text())
    rng = np.random.default_rng(SEED)

    import torch
    import yaml
    from safetensors.torch import load_file

    if OUT.exists():
        shutil.rmtree(OUT)
    data_out = OUT / "data"
    data_out.mkdir(parents=True)
    write_layout(data_out, rng, tiny["id_dim"])

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = narrowed_base_model(official, tiny, tmp)
        data = tmp / "data"
        shutil.copytree(data_out, data)
        for rel, face in PICTURES.items():
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shared / "fixtures/faces/images" / face, data / rel)
        sys.path.insert(0, str(base))
        import os

        os.chdir(base)  # PersonalDataset opens ./utils/dense_669_connectivity.tsv
        from dataset import PersonalDataset
        from modules.generator import Generator

        conf = yaml.safe_load(open("config/meta_portrait_256_eval.yaml"))
        conf["dataset"]["personalized"]["root"] = str(data)
        gen_conf = conf["model"]["generator"]
        gen_conf["block_expansion"] = tiny["encoder_block_expansion"]
        gen_conf["max_features"] = tiny["encoder_max_features"]
        gen_conf["ladder"]["z_dim"] = tiny["ladder_z_dim"]
        motion = gen_conf["dense_motion_params"]
        motion["block_expansion"] = tiny["motion_block_expansion"]
        motion["max_features"] = tiny["motion_max_features"]
        motion["AdaINc"] = tiny["motion_adain_c"]
        G = Generator(conf["model"].get("arch"), **gen_conf, **conf["model"]["common"])
        G.load_state_dict(load_file(str(shared / "fixtures/generator/tiny_weights.safetensors")), strict=True)
        G.eval()
        dataset = PersonalDataset(conf, "personalized", is_train=False)
        loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False)

        frames = []
        for item in loader:
            name = item["driving_name"][0]
            stem = name.rsplit(".", 1)[0]
            out_dir = OUT / "expected" / stem
            out_dir.mkdir(parents=True)
            with torch.inference_mode():
                # GeneratorFullModel.forward(stage="Full", inference=True): forward_warp, then forward_refine.
                ldmk_line = torch.cat((item["source_line"], item["driving_line"]), dim=1)
                warp = G(item["source"], ldmk_line=ldmk_line, stage="Warp")
                mouth_line = item["driving_line"] * item["mouth_mask"]
                out = G(
                    item["source"],
                    kp_driving={"value": item["driving_ldmk"]},
                    src_id=item["source_id"],
                    ldmk_line=ldmk_line,
                    mouth_line=mouth_line,
                    warp_out=warp,
                    stage="Refine",
                )
            prediction = out["prediction"][0]
            for key, tensor in [
                ("source_line", item["source_line"][0]),
                ("driving_line", item["driving_line"][0]),
                ("mouth_line", mouth_line[0]),
                ("driving", item["driving"][0]),
            ]:
                u8_png(out_dir / f"{key}.png", tensor)
            p16 = np.round((prediction.numpy().transpose(1, 2, 0) + 1.0) / 2.0 * 65535.0)
            cv2.imwrite(str(out_dir / "prediction16.png"), np.clip(p16, 0, 65535).astype(np.uint16)[:, :, ::-1])
            final = np.transpose(prediction.numpy(), [1, 2, 0])
            cv2.imwrite(str(out_dir / "official_output.png"), np.clip(final * 255, 0, 255).astype(np.uint8)[:, :, ::-1])
            frames.append(
                {
                    "name": name,
                    "source": str(MAP[name]),
                    "driving_ldmk": item["driving_ldmk"][0].numpy().astype(float).tolist(),
                    "src_id": item["source_id"][0].numpy().astype(float).tolist(),
                    "prediction_range": [float(prediction.min()), float(prediction.max())],
                }
            )

    manifest = {
        "made_by": "scripts/make_official_data_fixture.py",
        "official_commit": "4c3c9e3",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "pillow": __import__("PIL").__version__,
        "weights": "shared/fixtures/generator/tiny_weights.safetensors",
        "config": "shared/fixtures/generator/tiny_config.json",
        "pictures": PICTURES,
        "prediction16": "round((v + 1) / 2 * 65535), RGB",
        "frames": frames,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {OUT} ({len(frames)} frames)")


if __name__ == "__main__":
    main()
