"""The one typed configuration schema of allwen.

Every section forbids unknown keys, so a typo is an error that names the key instead of a
setting that silently does nothing. Paths stay strings here; they are resolved against the
config file's folder by :func:`allwen.config.load_config`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from allwen.config.choices import CHAMPION_BY, HEAD_NAMES, PAPER_METRICS, SELECTION_METRICS, WEIGHTING_NAMES


def keras_efficientnet(backbone: str) -> str | None:
    """``"v1"`` (EfficientNet B0-B7) or ``"v2"`` (EfficientNetV2) for the timm names of the architectures Keras
    applications build with drop-connect 0.2 and their own BatchNorm constants; None for any other."""
    arch = backbone.split(".", 1)[0]
    if re.fullmatch(r"(tf_)?efficientnet_b\d+", arch):
        return "v1"
    if re.match(r"(tf_)?efficientnetv2_", arch):
        return "v2"
    return None


class _Section(BaseModel):
    # allow_inf_nan=False: `train.lr: .inf` used to train to the end and fail on its own summary
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ClaheConfig(_Section):
    """CLAHE's options (``data.clahe: true`` is all of these defaults)."""

    order: Literal["before_resize", "after_resize"] = Field(
        "before_resize", description="before_resize: CLAHE on the image as read, then the resize (C-NMC: at 450 px); "
        "after_resize: resize to data.image_size first, as Experiment C's paper orders its steps",
    )
    channel: Literal["lab_lightness", "rgb"] = Field(
        "lab_lightness", description="lab_lightness: equalise LAB's L channel only (stain hues kept); rgb: each of R, G "
        "and B on its own",
    )
    background: Literal["keep_black", "equalise"] = Field(
        "keep_black", description="keep_black: pure black pixels (C-NMC's segmented background) stay black; equalise: "
        "CLAHE lifts them like any other pixel",
    )


class DataConfig(_Section):
    """Where the images are and how they are read."""

    source: Literal["auto", "cnmc", "taleqani", "folder", "csv"] = "auto"
    path: str | None = Field(None, description="dataset folder or CSV manifest")
    view: Literal["native", "binary"] = Field(
        "native", description="binary: Taleqani Benign=hem, Early/Pre/Pro=all"
    )
    image_size: int | None = Field(
        224, ge=8, le=4096, description="square side in pixels; null keeps the native size"
    )
    clahe: bool | ClaheConfig = Field(
        False, description="CLAHE on every image: true (the defaults of data.clahe.order/channel/background) or those "
        "options, e.g. {order: after_resize}",
    )
    clahe_clip: float = Field(2.0, gt=0)
    clahe_grid: int = Field(8, ge=1)
    augment: Literal["none", "flips_color", "crop_rotate_flip_shift", "dihedral"] = Field(
        "flips_color", description="dihedral: one of the 8 rotations/flips of the square per image and epoch"
    )
    num_workers: int | Literal["auto"] = Field(
        "auto", description="image-loading worker processes, one thread each, counted against the thread budget (--threads); auto = the budget - 1"
    )
    max_pixels: int = Field(
        25_000_000, ge=1, description="images whose header announces more pixels are left out (bomb guard)"
    )
    decode_cache: bool = Field(
        True, description="decode + resize (+ CLAHE) every image once per run into RUN/cache/decoded/"
    )

    @property
    def clahe_options(self) -> ClaheConfig | None:
        """CLAHE's options when CLAHE is on (``true``: the defaults), else None."""
        if self.clahe is False:
            return None
        return ClaheConfig() if self.clahe is True else self.clahe

    def clahe_record(self) -> bool | dict[str, str]:
        """CLAHE as the caches' keys and the weights' metadata record it: false, true (the defaults, so
        keys made before the options existed still match) or the options as a mapping."""
        options = self.clahe_options
        if options is None:
            return False
        return True if options == ClaheConfig() else options.model_dump()

    @model_validator(mode="after")
    def _workers(self) -> "DataConfig":
        if isinstance(self.num_workers, int) and self.num_workers < 0:
            raise ValueError(f"data.num_workers={self.num_workers}: use 0 or more, or auto")
        return self


class SplitConfig(_Section):
    """How images are divided into test, train and validation sides."""

    test: float | Literal["official"] = Field(
        0.2, description="held-out test fraction, or 'official' (the C-NMC preliminary test set)"
    )
    test_part: int | None = Field(
        None, ge=0, description="null: the test side is a hold-out of split.test; k: the test side is part k (from 0) "
        "of the round(1/split.test) stratified parts of all images (grouped like the split), so the parts are "
        "disjoint and cover every image: `allwen crossval` runs each part as a test side (docs/splits.md)",
    )
    folds: int = Field(5, ge=1, description="k of the k-fold on the non-test part; 1 = one hold-out")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="validation fraction when folds == 1")
    validate_on: Literal["fold", "test"] = Field(
        "fold", description="test: the test side doubles as the validation set and training holds all the rest "
        "(Experiment C as it was run; with folds 1 only): early stopping, kept epochs, champions and ensemble "
        "weights are then chosen on the test images, and every test metric is inflated"
    )
    group_by: Literal["image", "subject", "sequence", "cluster"] = Field(
        "image", description="what must stay on one side: image; subject (ids in the file names); sequence "
        "(pseudo-patients: blocks of split.sequence_block consecutive file numbers per class); cluster "
        "(pseudo-patients: Ward clusters of stain-colour statistics per class, about sequence_block images each)"
    )
    sequence_block: int | None = Field(
        None, ge=1, description="images per pseudo-patient for group_by sequence/cluster; null = from the data "
        "(Taleqani: 3,256 images / 89 patients reported by its authors = 37)"
    )
    duplicate_aware: bool = Field(
        True, description="keep exact duplicates (sha256) and near-duplicates (perceptual hash; backbone "
        "features when the run's feature cache holds them) on one side"
    )
    phash_distance: int | None = Field(
        24, ge=0, le=256, description="near-duplicates: at most this many of the 256 perceptual-hash bits differ; "
        "null = off (24: measured on Taleqani, docs/splits.md)"
    )
    feature_cosine: float | None = Field(
        0.985, gt=0, le=1, description="near-duplicates: cosine similarity of stage-1 backbone features at least "
        "this, when the run's feature cache already holds them; null = off (measured on Taleqani, docs/splits.md)"
    )
    seed: int = 0

    @model_validator(mode="after")
    def _test_fraction(self) -> "SplitConfig":
        if isinstance(self.test, float) and not 0.0 < self.test < 1.0:
            raise ValueError(f"split.test={self.test!r}: a fraction must lie strictly between 0 and 1")
        if self.test_part is not None:
            if self.test == "official":
                raise ValueError("split.test_part needs a test fraction (split.test: 0.2 gives 5 parts), not 'official'")
            parts = max(2, int(round(1.0 / float(self.test))))
            if self.test_part >= parts:
                raise ValueError(f"split.test_part={self.test_part}: split.test={self.test} gives {parts} parts, "
                                 f"numbered 0 to {parts - 1}")
        if self.validate_on == "test" and self.folds != 1:
            raise ValueError(f"split.validate_on=test with split.folds={self.folds}: the test side is one validation "
                             "set, so use split.folds: 1")
        return self


class ModelConfig(_Section):
    """Backbone by timm name, its weights, the head and optional activation swap."""

    backbone: str = "tf_efficientnetv2_m"
    weights: Literal["hub", "none"] | str = Field(
        "hub", description="'hub' (timm/HF hub), 'none' (random init) or a .safetensors path"
    )
    pretrained_tag: str | None = Field(
        None, description="timm pretrained tag of the weights (in1k, in21k_ft_in1k, aa_in1k, ra_in1k, ...): which "
        "hub weights are loaded, and which training recipe's preprocessing a weights file gets; null = timm's "
        "default tag for the backbone, written into the run folder's config.yaml when a run starts",
    )
    head: Literal[HEAD_NAMES] = Field(
        "sigmoid", description="fc_relu_softmax: Experiment D's head as the paper writes it (GAP -> one FC layer to "
        "the classes -> ReLU -> softmax, N(0, 1/n_in) init)",
    )
    head_width: int = Field(256, ge=1, description="hidden width of the fc_relu head (Experiment D)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the head's last layer")
    activation: Literal["native", "selu6", "selu6_paper"] = Field(
        "native", description="selu6: SeLU6 after every MBConv expansion (D's Eq. 1) only; selu6_paper: D's Eqs. 1, "
        "2, 4, 7 (SeLU6 after expansions, ReLU6 after depthwise convolutions, ReLU in squeeze-excitation and in "
        "Fused-MBConv blocks)",
    )

    drop_path: float | None = Field(
        None, ge=0, lt=1, description="stochastic depth (timm's drop_path_rate, Keras's drop_connect_rate), growing "
        "linearly to this rate over the blocks; acts in the blocks that train. null: 0.2 for the EfficientNet family "
        "(B0-B7, V2) when train.optimizer_defaults is keras, as Keras applications build them; 0 otherwise",
    )
    layer_defaults: Literal["torch", "keras"] | None = Field(
        None, description="keras: Keras's BatchNorm momentum (EfficientNet V1 0.99, i.e. PyTorch's 0.01; the "
        "heads' BatchNorm 0.99 with epsilon 1e-3) and glorot_uniform weights with zero biases for the heads' Dense "
        "layers (D's heads keep their stated N(0, 1/n_in)); null = train.optimizer_defaults",
    )

    @model_validator(mode="after")
    def _one_tag(self) -> "ModelConfig":
        if self.pretrained_tag is not None and not re.fullmatch(r"[a-z0-9_]+", self.pretrained_tag):
            raise ValueError(f"model.pretrained_tag={self.pretrained_tag!r}: a timm tag is lower-case letters, digits "
                             "and underscores (e.g. in1k), without the backbone name")
        if "." in self.backbone:
            tag = self.backbone.split(".", 1)[1]
            if self.pretrained_tag is not None and self.pretrained_tag != tag:
                raise ValueError(f"model.backbone={self.backbone!r} names tag {tag!r} but model.pretrained_tag="
                                 f"{self.pretrained_tag!r}: give the tag in one place (model.pretrained_tag)")
        return self


class StageConfig(_Section):
    epochs: int = Field(50, ge=0, le=100_000)
    patience: int | None = Field(5, ge=1, description="early-stopping patience; null = off")
    solver: Literal["adam", "lbfgs"] = Field(
        "adam", description="lbfgs (stage 1, linear head on cached features): the regularised optimum, "
        "L2 strength chosen on validation; epochs, patience and train.optimizer/lr do not apply"
    )
    l2: list[float] = Field(
        [1e-4, 1e-3, 1e-2, 1e-1], min_length=1, description="solver lbfgs: the L2 strengths tried"
    )
    augment: bool | None = Field(
        None, description="augment this stage's images with data.augment; null: stage 1 no (its features are "
        "cached once), stage 2 yes. true in stage 1 runs the frozen backbone on every augmented batch"
    )

    @model_validator(mode="after")
    def _strengths(self) -> "StageConfig":
        if any(s <= 0 for s in self.l2):
            raise ValueError(f"l2={self.l2}: strengths must be > 0")
        return self


def parse_duration(text: str | int | float, where: str = "train.time_limit") -> float:
    """Seconds in ``11h30m``, ``45m``, ``90s``, ``1.5h`` or a plain number of seconds."""
    value = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([dhms])", value)
        if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([dhms])", "", value).strip():
            raise ValueError(f"{where}={text!r}: write a duration like 11h30m, 45m, 90s or 1.5h")
        seconds = sum(float(n) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{where}={text!r}: give a duration above zero")
    return seconds


class TrainConfig(_Section):
    """Optimisation and the two stages."""

    batch_size: int = Field(64, ge=1, le=65_536)
    optimizer: Literal["adam", "adamw", "rmsprop", "sgd"] = "adam"
    optimizer_defaults: Literal["torch", "keras"] = Field(
        "torch", description="keras: the optimizers as Keras computes them, for the studies that ran on Keras "
        "(RMSprop w -= lr * g / sqrt(v + eps), rho 0.9, epsilon 1e-7; Adam/AdamW epsilon 1e-7 on the uncorrected "
        "sqrt(v); decoupled weight decay) and EfficientNet as Keras applications build it (model.drop_path 0.2, "
        "Keras BatchNorm constants, glorot_uniform head init); torch: PyTorch's (RMSprop alpha 0.99, epsilon 1e-8 "
        "outside the square root; Adam epsilon 1e-8)",
    )
    momentum: float = Field(
        0.9, ge=0, lt=1, description="sgd only; 0 = the plain gradient step w <- w - lr * grad (Experiment D's Eq. 13)"
    )
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "exponential", "cosine"] = "constant"
    decay_steps: int = Field(900, ge=1)
    decay_rate: float = Field(0.95, gt=0, le=1)
    class_weights: Literal["balanced", "none"] | list[float] = "balanced"
    monitor: Literal[(*SELECTION_METRICS, "loss")] = "accuracy"  # type: ignore[valid-type]
    keep: Literal["best", "last"] = Field(
        "best", description="best: the best validation epoch's weights; last: the model after the last "
        "stage's final epoch (early stopping off unless a stage sets a patience)"
    )
    stage1: StageConfig = StageConfig()
    stage2: StageConfig | None = StageConfig()
    unfreeze: float = Field(
        0.3, gt=0, le=1, description="stage 2: fraction (0, 1] of the backbone's blocks, from the top"
    )
    unfreeze_blocks: int | None = Field(
        None, ge=1, description="stage 2: a count of blocks from the top instead of a fraction"
    )
    feature_cache: bool = Field(True, description="cache frozen-backbone features for stage 1 (un-augmented stage 1)")
    stage1_augment: bool | None = Field(
        None, description="old spelling of train.stage1.augment (kept so older configs load)"
    )
    time_limit: str | None = Field(
        None, description="stop at the first unit boundary after this long (e.g. 11h30m, 45m, 90s), exit code 75; "
        "the same command resumes (--stop-after on the command line wins)"
    )
    frozen_runtime: Literal["auto", "torch", "onnxruntime", "openvino"] = Field(
        "auto", description="runtime of the frozen parts' forward passes (features, frozen blocks, TTA views); "
        "auto: onnxruntime on CPU, torch on GPU; a runtime differing from torch by more than 1e-4 is refused"
    )
    frozen_precision: Literal["f32", "low"] = Field(
        "f32", description="low: the runtime's lower-precision modes (OpenVINO bf16/f16 where the CPU has them; "
        "faster; checked against 10% of the outputs' largest magnitude instead of 1e-4)"
    )
    stage2_cache: bool = Field(
        True, description="stage 2 with no or dihedral augmentation: run the frozen lower blocks once per image "
        "(and view) and train the unfrozen top on their cached output"
    )
    stage2_cache_dtype: Literal["float32", "float16"] = Field(
        "float32", description="storage of the cached activations; float16 halves the disk and is less exact"
    )
    eval_batch_size: int | None = Field(
        None, ge=1, description="batch size for validation, prediction and caching; null = 2 x batch_size"
    )
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = "auto"
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int = Field(
        1, ge=1, description="train a stage with Lightning DDP over this many devices (GPUs, or CPU processes); "
        "train.batch_size stays the global batch (batch_size / devices per device)"
    )
    logger: Literal["csv", "tensorboard", "mlflow"] = "csv"
    deterministic: bool | Literal["auto"] = Field(
        "auto", description="auto: deterministic algorithms on CPU, cudnn.benchmark on GPU"
    )
    seed: int = 0

    @model_validator(mode="after")
    def _old_stage1_augment(self) -> "TrainConfig":
        """``train.stage1_augment`` (before ``train.stage1.augment`` existed) sets the new key."""
        if self.stage1_augment is not None:
            if self.stage1.augment is not None and self.stage1.augment != self.stage1_augment:
                raise ValueError(f"train.stage1_augment={self.stage1_augment} contradicts train.stage1.augment="
                                 f"{self.stage1.augment}; keep only train.stage1.augment")
            value = self.stage1_augment
            object.__setattr__(self, "stage1_augment", None)  # before the assignment re-validates
            self.stage1 = self.stage1.model_copy(update={"augment": value})
        # the resolved config says what each stage did: stage 1 un-augmented, stage 2 augmented by default
        if self.stage1.augment is None:
            self.stage1 = self.stage1.model_copy(update={"augment": False})
        if self.stage2 is not None and self.stage2.augment is None:
            self.stage2 = self.stage2.model_copy(update={"augment": True})
        return self

    @property
    def stage1_augmented(self) -> bool:
        """Whether stage 1 trains on augmented images (``train.stage1.augment``; default no)."""
        return bool(self.stage1.augment)

    @property
    def stage2_augmented(self) -> bool:
        """Whether stage 2 trains on augmented images (``train.stage2.augment``; default yes)."""
        return self.stage2 is not None and self.stage2.augment is not False

    @model_validator(mode="after")
    def _time_limit_is_a_duration(self) -> "TrainConfig":
        if self.time_limit is not None:
            parse_duration(self.time_limit)
        return self

    @model_validator(mode="after")
    def _last_means_no_early_stopping(self) -> "TrainConfig":
        """keep: last compares models after N epochs, so a stage stops early only when the
        config sets its patience explicitly (the resolved config then records patience: null)."""
        if self.keep != "last":
            return self
        for name in ("stage1", "stage2"):
            stage = getattr(self, name)
            if stage is not None and stage.patience is not None and "patience" not in stage.model_fields_set:
                setattr(self, name, stage.model_copy(update={"patience": None}))
        return self

    @model_validator(mode="after")
    def _batch_splits_over_devices(self) -> "TrainConfig":
        if self.batch_size % self.devices:
            raise ValueError(
                f"train.batch_size={self.batch_size} does not split over train.devices={self.devices}: "
                "each device trains batch_size / devices images per step; use a multiple of devices"
            )
        return self

    @model_validator(mode="after")
    def _something_trains(self) -> "TrainConfig":
        if self.stage1.epochs == 0 and (self.stage2 is None or self.stage2.epochs == 0):
            raise ValueError(
                "train.stage1.epochs and train.stage2 train nothing: give at least one stage epochs > 0"
            )
        if self.stage2 is not None and self.stage2.solver != "adam":
            raise ValueError("train.stage2.solver=lbfgs: only stage 1's linear head is convex; use adam for stage 2")
        if self.stage1.solver == "lbfgs" and (self.stage1.augment or not self.feature_cache):
            raise ValueError(
                "train.stage1.solver=lbfgs fits the head on cached features: set train.feature_cache: true and "
                "train.stage1.augment: false, or use solver adam"
            )
        return self


class EnsembleConfig(_Section):
    weightings: list[Literal[WEIGHTING_NAMES]] = list(WEIGHTING_NAMES)
    champion_by: Literal[CHAMPION_BY] = Field(
        "validation", description="test: one test metric; test_all: Experiment A's rule (mean of five test metrics)"
    )
    champion_metric: Literal[SELECTION_METRICS] = "accuracy"
    weights_from: Literal["validation", "test"] = Field(
        "validation", description="the intra-LR ensembles' (of champions) weights from the members' validation "
        "metrics, or from their test metrics (Experiment A's section 3.5 reading; the report names them test-selected)",
    )


class EvaluationConfig(_Section):
    questions: Literal["auto", "wen", "grid", "none"] = Field(
        "auto", description="the study's questions the report answers: wen (Experiment A's four: learning rate over "
        "all folds, WEN vs the best single model, intra vs inter, the best weighting; paired tests of accuracy, "
        "precision, recall, F1 and kappa); grid (the grid's winner, its cells and its folds: C, D); none; auto: wen for "
        "runs with scenarios, several folds and ensembles, else grid",
    )
    average: Literal["auto", "binary", "macro", "weighted"] = Field(
        "auto", description="how the headline tables average precision, recall and F1: binary = the positive class "
        "(two classes only), macro = unweighted mean over classes, weighted = by class support; auto = binary for two "
        "classes, macro otherwise. Every averaging is computed either way (precision_macro, f1_weighted, ...)",
    )
    bootstrap: int = Field(1000, ge=0)
    confidence: float = Field(0.95, gt=0, lt=1)
    stratify: bool = Field(
        True, description="the cluster bootstrap draws subjects (or pseudo-patients) within each class, as many as "
        "the test side holds of it, when every cluster holds one class: the split fixed each class's share, so no "
        "resample loses a class; false: draw all clusters together (docs/evaluation.md)",
    )
    seed: int = 0
    tta: bool = Field(
        False, description="also predict the test set averaged over the 8 dihedral views (predictions_test_tta.csv)"
    )
    min_clusters: int = Field(
        6, ge=2, description="warn (evaluation.warnings) when a class has fewer independent subject clusters on the "
        "test side; a class with one cluster gets no cluster interval at all (docs/splits.md)"
    )
    max_undefined_share: float = Field(
        0.01, ge=0, lt=1, description="warn when a class is missing from, or a metric undefined in, more than this "
        "share of the bootstrap resamples"
    )


class PaperNumber(_Section):
    """One headline number of the paper a preset reproduces."""

    metric: Literal[PAPER_METRICS] = Field(  # type: ignore[valid-type]
        description="the allwen metric it is (precision_macro, f1_weighted, ...: the paper's own averaging)"
    )
    value: float = Field(ge=0, le=1, description="as a fraction (96% = 0.96)")
    where: str = Field(description="where in the paper it stands (table, figure, abstract)")
    note: str = Field("", description="anything a reader must know about this number")
    fold: Literal["lowest", "highest", "mean"] | None = Field(
        None, description="paper.compare_to fold_range: which of the cell's per-fold values the number is (the run "
        "sets its own lowest, highest or mean fold at the same cell beside it)",
    )


class OtherMethod(_Section):
    """One row of the paper's own table comparing its method with others."""

    method: str = Field(description="the other method, as the paper names it")
    metric: Literal[PAPER_METRICS] = Field(description="the allwen metric of its number")  # type: ignore[valid-type]
    value: float = Field(ge=0, le=1, description="as a fraction")
    where: str = Field("", description="where in the paper (table)")


class PaperConfig(_Section):
    """The study's own numbers and protocol, set beside this run's in the report (``paper_comparison``)."""

    citation: str = Field(description="the study, in a line")
    test_images: int | None = Field(None, ge=1, description="the paper's test-set size")
    split: Literal["image", "subject", "official", "unstated"] = Field(
        description="the paper's split level: image-level random, subject-grouped, or the official (subject-"
        "disjoint) preliminary test set"
    )
    selected_on: Literal["test", "validation", "none", "unstated"] = Field(
        description="where the paper chose its reported model (grid cell, champion)"
    )
    average: Literal["binary", "macro", "weighted", "unstated"] = Field(
        description="how the paper averages precision, recall and F1"
    )
    compare_to: Literal["best_single", "best_ensemble", "cell", "fold_range", "ensemble"] = Field(
        "best_single", description="this run's model set beside the paper's numbers: best_single, best_ensemble; cell: "
        "the grid cell paper.cell names (the paper reported one cell); fold_range: the per-fold values of that cell "
        "(the paper reported a range over its folds); ensemble: the ensemble paper.ensemble names"
    )
    reported: str = Field("", description="what the paper reported, in words (a grid cell, a per-fold range, an ensemble)")
    cell: dict[str, Any] = Field(
        default_factory=dict, description="compare_to cell or fold_range: the scenario settings of the reported cell, "
        "e.g. {train.batch_size: 16, train.stage2.epochs: 50}"
    )
    ensemble: dict[str, str] = Field(
        default_factory=dict, description="compare_to ensemble: the ensemble's kind (inter, intra, scenarios) and weighting"
    )
    contradictions: list[str] = Field(default_factory=list, description="where the paper contradicts itself")
    other_methods: list[OtherMethod] = Field(
        default_factory=list, description="the paper's own comparison with other methods (method, metric, value)"
    )
    numbers: list[PaperNumber] = Field(min_length=1, description="the headline numbers: metric, value, where, note")
    differences: list[str] = Field(default_factory=list, description="other protocol differences, in words")


class Config(_Section):
    """A whole experiment: data, split, model, training grid, ensembles and evaluation."""

    name: str = "experiment"
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    scenarios: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="grid of dotted config keys to value lists, e.g. {'train.lr': [1e-3, 1e-4]}",
    )
    sweep: list[dict[str, list[Any]]] = Field(
        default_factory=list,
        description="stepwise sweep: ordered steps, each a grid of dotted keys; each step runs with the earlier "
        "steps' winners fixed, the last step's grid is the run's scenarios",
    )
    sweep_metric: Literal[SELECTION_METRICS] = Field(
        "accuracy", description="a sweep step's winner: best mean validation value over folds (ties: earlier value)"
    )
    ensemble: EnsembleConfig = EnsembleConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    paper: PaperConfig | None = Field(None, description="the reproduced paper's headline numbers and protocol")

    def resolved_model(self) -> ModelConfig:
        """``model`` with ``layer_defaults`` and ``drop_path`` left null filled from ``train.optimizer_defaults``
        and the backbone (resolved per scenario, so a backbone scenario gets its own; ``unit.json`` records them)."""
        model, keras = self.model, self.train.optimizer_defaults == "keras"
        update: dict[str, Any] = {}
        if model.layer_defaults is None:
            update["layer_defaults"] = self.train.optimizer_defaults
        if model.drop_path is None:
            update["drop_path"] = 0.2 if keras and keras_efficientnet(model.backbone) else 0.0
        return model.model_copy(update=update)

    @model_validator(mode="after")
    def _sweep_or_scenarios(self) -> "Config":
        if self.sweep and self.scenarios:
            raise ValueError("sweep and scenarios: give one; a sweep's last step is the run's scenarios")
        for k, step in enumerate(self.sweep, 1):
            if not step or any(not values for values in step.values()):
                raise ValueError(f"sweep step {k}: needs at least one key with at least one value")
        return self
