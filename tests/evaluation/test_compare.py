"""evaluation/compare.py: runs made on the same images are matched, others refused or told apart."""

from __future__ import annotations

from allwen.evaluation.compare import data_fingerprint
from allwen.evaluation.synthetic import write_synthetic_run
from allwen.runfolder import RunFolder


def test_the_fingerprint_is_the_split_records_image_keys(tmp_path):
    small = dict(n_test=12, n_test_subjects=4, n_pool=24, n_pool_subjects=6, lrs=(1e-3,), folds=2, bootstrap=0)
    a = tmp_path / "a"
    write_synthetic_run(a, seed=0, **small)
    write_synthetic_run(tmp_path / "b", seed=1, **small)  # other folds and probabilities, the same images
    write_synthetic_run(tmp_path / "c", seed=0, **{**small, "n_test": 16})
    assert data_fingerprint(a) == data_fingerprint(tmp_path / "b") != data_fingerprint(tmp_path / "c")
    import hashlib

    keys = RunFolder(a).split_truth().image_keys().tolist()
    assert data_fingerprint(a) == hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()
    assert data_fingerprint(tmp_path / "nothing") is None
