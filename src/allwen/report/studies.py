"""Report sections that show what a study's paper shows and the rest of the report does not (issue 28):
A's tests over all folds and its baselines outside the family, ROC curves of every model, CLAHE
samples (C), the test loss (B), parameters as Keras counts them (E). Each is a new section, filled
only from the results model (and, for the CLAHE figure, the test images it names)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from allwen.report import charts
from allwen.report.format import fmt_count, fmt_num
from allwen.report.render import svg_macro
from allwen.report.sections import ReportContext, comparison_rows
from allwen.report.view import Cell, Fig, Gallery, Row, Section, Table, Text

CLAHE_SAMPLES = 2  # per class


def study_sections(ctx: ReportContext) -> list[Section]:
    """The sections this run's study can fill, in report order."""
    s = ctx.s
    out: list[Section] = []
    if s.comparisons.lr_folds or s.comparisons.baselines_vs_single:
        out.append(study_tests_section(ctx))
    if s.questions is not None and ctx.figures is not None:  # A: every evaluated model's ROC in one chart
        out.append(roc_all_section(ctx))
    if s.config.data.clahe and s.samples and ctx.figures is not None:
        out.append(clahe_section(ctx))
        maps = feature_maps_section(ctx)  # C's Gambar 4
        if maps is not None:
            out.append(maps)
    if any(m.test_loss is not None for m in s.single_models) and (s.sweep or len(s.split.folds) <= 1):
        out.append(test_loss_section(ctx))
    if any(p.keras_total for p in s.parameters):
        out.append(keras_parameters_section(ctx))
    return out


def study_tests_section(ctx: ReportContext) -> Section:
    alpha = 1 - ctx.s.evaluation.confidence
    headers = ["A", "B", "Test", "Metric", "Difference (A - B) [CI]", "p", "p (Holm)", f"Significant (alpha {alpha:.2f})"]
    c = ctx.s.comparisons
    blocks: list[Any] = []
    if c.lr_folds:
        blocks += [Text("The learning rates over all their folds", "heading"),
                   Text("Each pair of scenarios compared on every fold model (fold k with fold k; the difference is "
                        "the mean of A's fold models' metric minus B's), in the five metrics the study's hypotheses "
                        "name, by a cluster swap permutation test (whole test subjects, or images where there are none, "
                        "swapped between the two sides); Holm within each metric."),
                   Table(headers, comparison_rows(c.lr_folds, alpha))]
    if c.baselines_vs_single:
        blocks += [Text("Baseline ensembles against the best single model (outside the study's family)", "heading"),
                   Text("The uniform, vote, AUC and greedy ensembles are no part of the study's questions: they are "
                        "Holm-corrected among themselves, so they do not make the study's answers more conservative."),
                   Table(headers, comparison_rows(c.baselines_vs_single, alpha))]
    return Section("study-tests", "The study's own tests", blocks)


def roc_all_section(ctx: ReportContext) -> Section:
    s = ctx.s
    entries = [(m.name, m.roc, m.name == s.best_single) for m in s.single_models]
    entries += [(e.name, e.roc, False) for e in s.ensembles]
    panels = [svg_macro("roc", p) for p in charts.roc_panels(entries) if p.curves]
    return Section("roc-all", "ROC curves of every model", [
        ctx.chart("roc_all.svg", panels, f"Test ROC of all {len(entries)} evaluated models: every fold model of every "
                                         "scenario and every ensemble (best single model dashed)")])


def clahe_section(ctx: ReportContext) -> Section:
    """Original beside CLAHE-enhanced test images, preprocessed as the run trained (order, size, options)."""
    data = ctx.s.config.data
    options = data.clahe_options
    tiles = []
    for cls, paths in ctx.s.samples.items():
        for i, path in enumerate(paths[:CLAHE_SAMPLES]):
            name = f"clahe_{''.join(ch if ch.isalnum() else '_' for ch in cls)}_{i}.png"
            png = _clahe_pair(Path(path), ctx.figures.folder / name, data) if ctx.figures else None
            tiles.append(Fig(png, ctx.figure_link(name), f"{cls}: {Path(path).name}, original | CLAHE"))
    order = "after the resize" if options.order == "after_resize" else "before the resize"
    return Section("clahe", "CLAHE: original and enhanced", [
        Text(f"Test images as read (left) and as the network saw them (right): CLAHE {order} to "
             f"{data.image_size or 'the native'} px, clip {data.clahe_clip}, {data.clahe_grid}x{data.clahe_grid} tiles, "
             f"{options.channel.replace('_', ' ')}, background {options.background.replace('_', ' ')}."),
        Gallery(tiles)])


def _clahe_pair(source: Path, out: Path, data: Any, side: int = 160) -> Path | None:
    import numpy as np
    from PIL import Image

    from allwen.data.clahe import clahe_rgb
    from allwen.io import atomic_write

    if not source.is_file():
        return None
    options = data.clahe_options
    with Image.open(source) as image:
        rgb = image.convert("RGB")
    size = data.image_size or rgb.width

    def enhance(img: Image.Image) -> Image.Image:
        return Image.fromarray(clahe_rgb(np.asarray(img), data.clahe_clip, data.clahe_grid, options.channel,
                                         options.background == "keep_black"))

    if options.order == "after_resize":
        enhanced = enhance(rgb.resize((size, size), Image.Resampling.BILINEAR))
    else:
        enhanced = enhance(rgb).resize((size, size), Image.Resampling.BILINEAR)
    left, right = rgb.resize((side, side), Image.Resampling.BILINEAR), enhanced.resize((side, side), Image.Resampling.BILINEAR)
    pair = Image.new("RGB", (2 * side + 4, side), "white")
    pair.paste(left, (0, 0))
    pair.paste(right, (side + 4, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: pair.save(tmp, format="PNG"))
    return out


def test_loss_section(ctx: ReportContext) -> Section:
    rows = [Row([Cell(m.name), Cell(fmt_num(m.test_loss), numeric=True), Cell(fmt_num(m.metrics.accuracy), numeric=True)])
            for m in ctx.s.single_models]
    return Section("test-loss", "Test loss", [Table(
        ["Model", "Test loss", "Test accuracy"], rows,
        caption="Cross-entropy on the test images (mean over images, no class weights), as Keras's evaluate reports it")])


def keras_parameters_section(ctx: ReportContext) -> Section:
    rows = []
    for p in ctx.s.parameters:
        if p.keras_total is None or p.trainable is None:
            continue
        rows.append(Row([Cell(p.stage), Cell(fmt_count(p.keras_total), numeric=True),
                         Cell(fmt_count(p.trainable), numeric=True),
                         Cell(fmt_count(p.keras_total - p.trainable), numeric=True),
                         Cell(fmt_count(p.batchnorm_statistics), numeric=True)]))
    return Section("keras-parameters", "Parameters as Keras counts them", [Table(
        ["Stage", "Total params", "Trainable params", "Non-trainable params", "of which BatchNorm statistics"], rows,
        caption="Keras's model.summary() counts BatchNorm's moving mean and variance as non-trainable parameters "
                "(PyTorch keeps them as buffers), so its total is larger than the Parameters table's")])


def feature_maps_section(ctx: ReportContext) -> Section | None:
    """The first block's feature maps of the best single model on a test image (C's figure), computed from
    the unit's saved weights; None when the image or weights are gone or the backbone has no ``blocks``."""
    import json

    from allwen.runfolder import RunFolder

    s = ctx.s
    model_result = s.model(s.best_single)
    paths = [p for ps in s.samples.values() for p in ps]
    if not paths or not hasattr(model_result, "scenario") or ctx.figures is None:
        return None
    unit = RunFolder(ctx.run_dir).unit(model_result.scenario, model_result.fold)
    source = Path(paths[0])
    if not unit.weights.is_file() or not source.is_file():
        return None
    name = "feature_maps.png"
    png = _feature_maps(source, unit.weights, json.loads(unit.data_config.read_text()), s, ctx.figures.folder / name)
    if png is None:
        return None
    return Section("feature-maps", "Feature maps", [
        Text(f"The first block's first 16 channels for {source.name} ({model_result.name}; each scaled to its own "
             "range), as the network sees the preprocessed image."),
        Gallery([Fig(png, ctx.figure_link(name), f"{model_result.name}: first block, {source.name}")])])


def _feature_maps(source: Path, weights: Path, norm: dict[str, Any], s: Any, out: Path, channels: int = 16) -> Path | None:
    import numpy as np
    import torch
    from PIL import Image

    from allwen.data.transforms import build_transform, read_image
    from allwen.io import atomic_write
    from allwen.models import build_classifier, load_weights

    cfg = s.config
    model = build_classifier(cfg.resolved_model().model_copy(update={"weights": "none"}), len(s.classes))
    load_weights(model, weights)
    backbone = model.backbone.eval()
    blocks = getattr(backbone, "blocks", None)
    if blocks is None or not len(blocks):
        return None
    captured: list[torch.Tensor] = []
    handle = blocks[0].register_forward_hook(lambda _m, _i, output: captured.append(output.detach()))
    try:
        x = build_transform(cfg.data.model_copy(update={"augment": "none"}), norm, train=False)(read_image(str(source)))
        with torch.no_grad():
            backbone(x.unsqueeze(0))
    finally:
        handle.remove()
    maps = captured[0][0, :channels].float().numpy()
    side = maps.shape[-1]
    grid = int(np.ceil(np.sqrt(len(maps))))
    canvas = np.full((grid * (side + 2), grid * (side + 2)), 255, np.uint8)
    for i, fmap in enumerate(maps):
        lo, hi = float(fmap.min()), float(fmap.max())
        tile = ((fmap - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(fmap)).astype(np.uint8)
        r, c = divmod(i, grid)
        canvas[r * (side + 2):r * (side + 2) + side, c * (side + 2):c * (side + 2) + side] = tile
    image = Image.fromarray(canvas).resize((min(640, canvas.shape[1] * 2),) * 2, Image.Resampling.NEAREST)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: image.save(tmp, format="PNG"))
    return out
