"""Where Grad-CAM looks on real cells: the share of each map's mass inside the cell, as JSON.

    python benchmarks/gradcam_share.py BUNDLE IMAGES... [--layer feature_info|last_map]

For each image, the bundle's Grad-CAM map for its predicted class (``allwen.serve.explain``, the
members' maps combined with the ensemble weights, at the image's own size) and the share of the
map's mass on the cell. The cell is every pixel that is not black (max over R, G, B > ``--black``):
C-NMC 2019's cells are segmented on an exactly black background. ``--layer last_map`` measures
the layer chosen before (the backbone's last 4-D output, after its 1x1 head convolution), for
comparison. Prints one JSON object: per image and mean/min shares, and the cell's own area share
(what a map spread evenly over the image would give).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--layer", choices=("feature_info", "last_map"), default="feature_info")
    parser.add_argument("--black", type=int, default=0, help="a pixel is background when max(R, G, B) <= this")
    args = parser.parse_args(argv)

    import torch

    import allwen.serve.explain as explain
    from allwen.api import load_bundle
    from allwen.serve.images import read_image_file

    files = sorted(p for arg in map(Path, args.images) for p in (sorted(arg.rglob("*")) if arg.is_dir() else [arg])
                   if p.is_file())
    if args.layer == "last_map":
        explain.target_layer = explain.last_feature_layer  # the choice before feature_info, for comparison
    bundle = load_bundle(args.bundle, runtime="torch")
    table = bundle.predict([str(f) for f in files])
    classes = list(bundle.classes)
    rows = []
    for path, predicted in zip(files, table["predicted"]):
        image = read_image_file(path)
        cam = explain.combined_cams(bundle, [image], np.array([classes.index(predicted)]), torch.device("cpu"))[0]
        cell = np.asarray(image).max(axis=2) > args.black
        mass = float(cam.sum())
        rows.append({"file": path.name, "predicted": predicted, "cell_area_share": float(cell.mean()),
                     "share_in_cell": float(cam[cell].sum() / mass) if mass > 0 else None})
    shares = [r["share_in_cell"] for r in rows if r["share_in_cell"] is not None]
    print(json.dumps({
        "bundle": str(args.bundle), "layer": args.layer, "n": len(rows),
        "cell": f"pixels with max(R, G, B) > {args.black}",
        "mean_share_in_cell": float(np.mean(shares)) if shares else None,
        "min_share_in_cell": float(np.min(shares)) if shares else None,
        "mean_cell_area_share": float(np.mean([r["cell_area_share"] for r in rows])), "images": rows,
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
