"""Out-of-distribution scores on a backbone's pooled features: is this image like the training cells?

A classifier gives a class to anything, including a smear photograph sent to a single-cell
model or a stain it never saw. A distance in feature space says how unlike the training images
an input is, independently of the class probabilities:

* ``mahalanobis`` (Lee et al. 2018): the smallest Mahalanobis distance to a training class mean,
  with one covariance shared by the classes (class-centred features), estimated with
  scikit-learn's Ledoit-Wolf shrinkage so it is well conditioned with fewer images than
  feature dimensions.
* ``knn`` (Sun et al. 2022): the Euclidean distance of the L2-normalised features to the k-th
  nearest training image (scikit-learn ``NearestNeighbors``).

The detector is fitted on training images; the flag threshold is the ``quantile`` of the scores
of held-out in-distribution (validation) images, so about ``1 - quantile`` of new in-distribution
images are flagged. Learned state is arrays (:meth:`to_arrays`, saved as safetensors in a bundle).

A network trained with colour augmentation has learnt not to see brightness and stain: the
demo's model, trained on synthetic cells with ``augment: flips_color``, flags none of the 8 real
C-NMC cells (darker, smaller, irregular) by its features alone, while the input's colour
statistics tell them apart (``docs/results.md``). :class:`WithInputStatistics` therefore adds a Mahalanobis distance on
:func:`input_statistics` (per-channel mean and standard deviation of the normalised input
tensor) and scores an image by the larger of the two distances, each divided by its own
validation quantile, so either kind of difference can flag it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Share of in-distribution validation images below the flag threshold (about 5% of good images flagged).
DEFAULT_QUANTILE = 0.95
DEFAULT_K = 10


def _features(x: np.ndarray, dim: int | None = None) -> np.ndarray:
    f = np.asarray(x, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 1:
        raise ValueError(f"features must be 2-D (n >= 1, d), got shape {f.shape}")
    if dim is not None and f.shape[1] != dim:
        raise ValueError(f"features have {f.shape[1]} dimensions, the detector was fitted on {dim}")
    if not np.all(np.isfinite(f)):
        raise ValueError("features contain NaN or infinite values")
    return f


def _inverse(covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(precision, its factor ``L`` with ``precision = L L^T``) of a positive definite covariance, through
    its Cholesky factor (sklearn's ``pinvh`` takes an eigendecomposition, ten times slower); a covariance
    that is not positive definite gets ``pinvh`` (and no factor)."""
    from scipy import linalg

    try:
        lower = np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError:
        return linalg.pinvh(covariance), None
    inv_lower, info = linalg.lapack.dtrtri(lower, lower=1)  # C^-1 of covariance = C C^T
    if info != 0:
        return linalg.pinvh(covariance), None
    factor = np.ascontiguousarray(inv_lower.T)  # precision = C^-T C^-1 = L L^T with L = C^-T
    return factor @ factor.T, factor


@dataclass
class MahalanobisOOD:
    """Smallest class-conditional Mahalanobis distance, shared Ledoit-Wolf covariance.

    The precision is inverted through the covariance's Cholesky factor and distances are taken
    after one multiplication by the precision's factor (``||f L - mu L||``, ``P = L L^T``): the same
    numbers as ``(f - mu) P (f - mu)^T`` per class (to 1e-12), about 40 times faster at 1,280 dimensions.
    """

    name: str = "mahalanobis"
    means_: np.ndarray | None = field(default=None, repr=False)
    precision_: np.ndarray | None = field(default=None, repr=False)
    _factor: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def fit(self, features: np.ndarray, labels: np.ndarray) -> MahalanobisOOD:
        from sklearn.covariance import LedoitWolf

        f = _features(features)
        y = np.asarray(labels, dtype=np.int64)
        if y.shape != (len(f),):
            raise ValueError(f"labels must be one per feature row ({len(f)}), got shape {y.shape}")
        classes = np.unique(y)
        self.means_ = np.stack([f[y == c].mean(axis=0) for c in classes])
        centred = f - self.means_[np.searchsorted(classes, y)]
        covariance = LedoitWolf(assume_centered=True, store_precision=False).fit(centred).covariance_
        self.precision_, self._factor = _inverse(covariance)
        return self

    def factor(self) -> np.ndarray:
        """``L`` with ``precision = L L^T`` (computed once per detector)."""
        if self._factor is None:
            try:
                self._factor = np.linalg.cholesky(self.precision_)
            except np.linalg.LinAlgError:  # not positive definite (a precision saved in float32): its symmetric root
                w, v = np.linalg.eigh((self.precision_ + self.precision_.T) / 2)
                self._factor = v * np.sqrt(np.maximum(w, 0.0))[None, :]
        return self._factor

    def score(self, features: np.ndarray) -> np.ndarray:
        if self.means_ is None or self.precision_ is None:
            raise ValueError("the detector is not fitted")
        f = _features(features, self.means_.shape[1])
        factor = self.factor()
        centres = self.means_ @ factor
        out = np.empty(len(f))
        for start in range(0, len(f), 256):  # (block, K, d) at a time: bounded memory
            diff = (f[start:start + 256] @ factor)[:, None, :] - centres[None, :, :]
            out[start:start + 256] = np.sqrt(np.maximum((diff * diff).sum(axis=-1).min(axis=1), 0.0))
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"means": np.asarray(self.means_, np.float32), "precision": np.asarray(self.precision_, np.float32)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> MahalanobisOOD:
        return cls(means_=np.asarray(arrays["means"], np.float64), precision_=np.asarray(arrays["precision"], np.float64))


@dataclass
class KNNOOD:
    """Distance of the L2-normalised features to the k-th nearest training image."""

    k: int = DEFAULT_K
    name: str = "knn"
    bank_: np.ndarray | None = field(default=None, repr=False)

    def fit(self, features: np.ndarray, labels: np.ndarray | None = None) -> KNNOOD:
        f = _features(features)
        if len(f) < self.k:
            raise ValueError(f"knn needs at least k={self.k} training images, got {len(f)}")
        self.bank_ = _normalise(f)
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        from sklearn.neighbors import NearestNeighbors

        if self.bank_ is None:
            raise ValueError("the detector is not fitted")
        f = _normalise(_features(features, self.bank_.shape[1]))
        dist, _ = NearestNeighbors(n_neighbors=self.k).fit(self.bank_).kneighbors(f)
        return dist[:, -1]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"bank": np.asarray(self.bank_, np.float32), "k": np.array([self.k], np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> KNNOOD:
        return cls(k=int(np.asarray(arrays["k"]).ravel()[0]), bank_=np.asarray(arrays["bank"], np.float64))


#: Columns :func:`input_statistics` appends to the pooled features (mean and std of each of 3 channels).
N_INPUT_STATS = 6


def input_statistics(x: np.ndarray) -> np.ndarray:
    """Per-channel mean and standard deviation of a normalised input batch (n, 3, H, W) -> (n, 6)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 4 or a.shape[1] != 3:
        raise ValueError(f"input batch must be (n, 3, H, W), got shape {a.shape}")
    return np.concatenate([a.mean(axis=(2, 3)), a.std(axis=(2, 3))], axis=1)


@dataclass
class WithInputStatistics:
    """A feature detector and a Mahalanobis distance on the input statistics, as one score.

    Rows are ``[pooled features..., input statistics (N_INPUT_STATS)]``. :meth:`fit` fits both
    on training rows and divides each score by its ``quantile`` on validation rows
    (``val_features``), so the combined score ``max(feature / scale_f, input / scale_i)`` puts
    both on one scale: above 1 means beyond that part's validation quantile.
    """

    features: Any
    inputs: MahalanobisOOD = field(default_factory=MahalanobisOOD)
    scales_: np.ndarray | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.features.name

    @staticmethod
    def _split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = _features(x)
        if f.shape[1] <= N_INPUT_STATS:
            raise ValueError(f"rows must hold features and {N_INPUT_STATS} input statistics, got {f.shape[1]} columns")
        return f[:, :-N_INPUT_STATS], f[:, -N_INPUT_STATS:]

    def fit(self, rows: np.ndarray, labels: np.ndarray, val_rows: np.ndarray,
            quantile: float = DEFAULT_QUANTILE) -> WithInputStatistics:
        feats, stats = self._split(rows)
        self.features.fit(feats, labels)
        self.inputs.fit(stats, np.zeros(len(stats), dtype=np.int64))  # one centre: colour is not a class cue
        vf, vs = self._split(val_rows)
        self.scales_ = np.array([quantile_threshold(self.features.score(vf), quantile),
                                 quantile_threshold(self.inputs.score(vs), quantile)])
        self.scales_ = np.maximum(self.scales_, 1e-12)
        return self

    def parts(self, rows: np.ndarray) -> np.ndarray:
        """(n, 2): each part's score over its scale (feature distance, input-statistics distance)."""
        if self.scales_ is None:
            raise ValueError("the detector is not fitted")
        feats, stats = self._split(rows)
        return np.stack([self.features.score(feats), self.inputs.score(stats)], axis=1) / self.scales_[None, :]

    def score(self, rows: np.ndarray) -> np.ndarray:
        return self.parts(rows).max(axis=1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {f"features.{k}": v for k, v in self.features.to_arrays().items()}
        out.update({f"inputs.{k}": v for k, v in self.inputs.to_arrays().items()})
        out["scales"] = np.asarray(self.scales_, np.float64)
        return out

    @classmethod
    def from_arrays(cls, method: str, arrays: dict[str, np.ndarray]) -> WithInputStatistics:
        part = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("features.")}
        inputs = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("inputs.")}
        return cls(OOD_METHODS[method].from_arrays(part), MahalanobisOOD.from_arrays(inputs),
                   np.asarray(arrays["scales"], np.float64))


def _normalise(f: np.ndarray) -> np.ndarray:
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


#: Detectors by name (``allwen export --ood-method``).
OOD_METHODS = {"mahalanobis": MahalanobisOOD, "knn": KNNOOD}


def make_detector(method: str):
    """A new detector by name; an unknown name lists the known ones."""
    if method not in OOD_METHODS:
        raise ValueError(f"OOD method {method!r}: choose from {', '.join(OOD_METHODS)}")
    return OOD_METHODS[method]()


def load_detector(method: str, arrays: dict[str, np.ndarray]):
    """A fitted detector from its arrays (:class:`WithInputStatistics` when they hold ``scales``)."""
    if method not in OOD_METHODS:
        raise ValueError(f"OOD method {method!r}: choose from {', '.join(OOD_METHODS)}")
    if "scales" in arrays:
        return WithInputStatistics.from_arrays(method, arrays)
    return OOD_METHODS[method].from_arrays(arrays)


def quantile_threshold(in_scores: np.ndarray, quantile: float = DEFAULT_QUANTILE) -> float:
    """The flag threshold: the ``quantile`` of in-distribution (validation) scores ('higher' interpolation)."""
    s = np.asarray(in_scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)):
        raise ValueError("in-distribution scores must be a non-empty 1-D finite array")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"OOD quantile must be strictly between 0 and 1, got {quantile!r}")
    return float(np.quantile(s, quantile, method="higher"))


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """AUROC of the score separating out-of-distribution (positive) from in-distribution images."""
    from allwen.evaluation.metrics import auc_stack

    s_in, s_out = np.asarray(in_scores, np.float64).ravel(), np.asarray(out_scores, np.float64).ravel()
    if s_in.size == 0 or s_out.size == 0:
        raise ValueError("AUROC needs at least one in- and one out-of-distribution score")
    is_pos = np.r_[np.zeros(s_in.size, bool), np.ones(s_out.size, bool)]
    return float(auc_stack(is_pos, np.r_[s_in, s_out])[0])


__all__ = ["DEFAULT_K", "DEFAULT_QUANTILE", "KNNOOD", "MahalanobisOOD", "N_INPUT_STATS", "OOD_METHODS",
           "WithInputStatistics", "auroc", "input_statistics", "load_detector", "make_detector", "quantile_threshold"]
