"""Near-duplicates on a real dataset: how many pairs and groups each threshold finds, and a picture.

    python benchmarks/near_duplicates.py ../shared/data/taleqani/Original \\
        --run runs/tal4-image --png docs/screenshots/near_duplicates.png --json

Counts image pairs by perceptual-hash distance (256-bit ``imagehash.phash``, as
``split.phash_distance``) and, with ``--run``, by cosine similarity of the stage-1 features the
run's feature cache holds (as ``split.feature_cosine``); for each threshold: pairs, groups
(transitive), pairs across classes and pairs whose file numbers lie more than 40 apart (in
Taleqani, consecutive numbers come from one smear). The picture shows example pairs with their
distance. The last line of ``--json`` output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from allwen.data import load_source  # noqa: E402
from allwen.data.neardup import feature_pairs, groups_from_pairs, phashes  # noqa: E402
from allwen.training.feature_cache import FeatureCache  # noqa: E402


def _number(path: str) -> int:
    return int(re.findall(r"\d+", Path(path).stem)[-1])


def _all_pairs_by_hash(hashes: np.ndarray, max_distance: int) -> list[tuple[int, int, int]]:
    """Every pair (not a spanning set) within ``max_distance`` bits."""
    out = []
    for start in range(0, len(hashes), 512):
        dist = np.bitwise_count(hashes[start:start + 512, None, :] ^ hashes[None, :, :]).sum(axis=2)
        rows, cols = np.nonzero(dist <= max_distance)
        keep = cols > rows + start
        out += [(int(r + start), int(c), int(dist[r, c])) for r, c in zip(rows[keep], cols[keep])]
    return out


def _describe(pairs, n, labels, numbers, digests) -> dict:
    pairs = [p for p in pairs if digests[p[0]] != digests[p[1]]]  # byte-identical copies are exact duplicates
    groups = groups_from_pairs(n, pairs)
    return {
        "pairs": len(pairs),
        "groups": len(groups),
        "images_in_groups": int(sum(len(g) for g in groups)),
        "pairs_across_classes": int(sum(labels[i] != labels[j] for i, j, _ in pairs)),
        "pairs_more_than_40_numbers_apart": int(sum(labels[i] == labels[j] and abs(numbers[i] - numbers[j]) > 40
                                                    for i, j, _ in pairs)),
    }


def _picture(table, examples, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(len(examples), 2, figsize=(4.4, 2.2 * len(examples)), squeeze=False)
    for r, (i, j, what) in enumerate(examples):
        for c, k in enumerate((i, j)):
            axes[r][c].imshow(Image.open(table.frame["path"].iat[k]).convert("RGB"))
            axes[r][c].set_title(Path(table.frame["path"].iat[k]).name.replace("WBC-", ""), fontsize=7)
            axes[r][c].axis("off")
        axes[r][0].text(-0.08, 0.5, what, transform=axes[r][0].transAxes, rotation=90, va="center", ha="right",
                        fontsize=7)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--source", default="auto")
    parser.add_argument("--run", type=Path, help="a run whose feature cache holds stage-1 features of these images")
    parser.add_argument("--png", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    table = load_source(args.root, args.source)
    n = len(table)
    labels = table.frame["label"].to_numpy()
    numbers = np.array([_number(p) for p in table.frame["path"]])
    digests = table.frame["sha256"].to_numpy()
    hashes = phashes(table.frame["path"].tolist())
    all_pairs = _all_pairs_by_hash(hashes, 96)
    out: dict = {"images": n, "exact_duplicate_groups": len(table.duplicate_groups()), "phash": {}, "features": {}}
    for t in (8, 16, 24, 32, 48, 64, 96):
        out["phash"][t] = _describe([p for p in all_pairs if p[2] <= t], n, labels, numbers, digests)
    feature_examples = []
    if args.run:
        for key, values in FeatureCache(args.run / "cache" / "features").stage1_features(table.frame["sha256"].tolist()):
            pairs = feature_pairs(values, 0.90)
            out["features"][key] = {str(t): _describe([p for p in pairs if p[2] >= t], n, labels, numbers, digests)
                                    for t in (0.95, 0.97, 0.98, 0.985, 0.99)}
            close = sorted((p for p in pairs if digests[p[0]] != digests[p[1]]), key=lambda p: -p[2])
            hashed = {(i, j) for i, j, d in all_pairs if d <= 24}
            feature_examples += [(i, j, f"cosine {c:.3f}, not a phash pair") for i, j, c in close
                                 if (i, j) not in hashed][:2]
    if args.png:
        by_distance = sorted((p for p in all_pairs if digests[p[0]] != digests[p[1]]), key=lambda p: p[2])
        picks, seen = [], set()
        for lo, hi in ((0, 4), (8, 16), (18, 24), (28, 40)):
            cand = [p for p in by_distance if lo <= p[2] <= hi and p[0] not in seen]
            if cand:
                i, j, d = cand[len(cand) // 2]
                picks.append((i, j, f"phash distance {d}/256"))
                seen.add(i)
        _picture(table, picks + feature_examples, args.png)
        out["png"] = str(args.png)
    if args.json:
        print(json.dumps(out))
    else:
        print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
