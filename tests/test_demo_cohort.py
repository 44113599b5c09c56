"""The demo's cohort is big enough for its statistics to mean something (issue 19, item 5)."""

import numpy as np

from allwen.config import load_config
from allwen.data import load_source
from allwen.data.groups import leakage_summary
from allwen.data.splits import make_split
from allwen.demo import DEMO_DATA, IMAGE_LEVEL
from allwen.evaluation.stats import bootstrap_weights
from allwen.evaluation.trust import assess, clusters_per_class


def test_demo_subject_split_holds_six_clusters_per_class_and_no_warning(tmp_path):
    from allwen.data.synth import generate_cnmc

    generate_cnmc(tmp_path, **DEMO_DATA)
    path = tmp_path / "C-NMC_Leukemia" / "training_data"
    table = load_source(path)
    cfg = load_config("preset:demo", [f"data.path={path}"])
    split = make_split(table, cfg.split)
    test = table.frame.iloc[split.test]
    y = table.label_indices()[split.test]
    keys = table.group_keys(by_subject=True, duplicate_aware=True)[split.test]
    clusters = np.unique(keys, return_inverse=True)[1]
    per_class = clusters_per_class(y, clusters, len(table.classes))
    subjects = [test.loc[test["label"] == c, "subject"].nunique() for c in table.classes]
    assert min(per_class) >= cfg.evaluation.min_clusters == 6
    assert per_class == subjects  # no two test subjects share a duplicate image
    ev = cfg.evaluation
    weights = bootstrap_weights(len(y), ev.bootstrap, ev.seed, clusters)
    assert (weights @ np.eye(2, dtype=int)[y] > 0).all()  # every resample draws both classes
    assert assess(y, clusters, table.classes, {}, ev.bootstrap, ev.seed) == []
    assert "no leakage" in leakage_summary(split.leakage)
    # the image-level run of the demo still leaks, and its banner says so
    image = make_split(table, load_config("preset:demo", [f"data.path={path}", *IMAGE_LEVEL]).split)
    assert "LEAKS" in leakage_summary(image.leakage)
