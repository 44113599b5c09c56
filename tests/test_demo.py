"""``allwen demo --quick``: the whole protocol in a smoke check, without stage 2."""

from __future__ import annotations

from allwen.config import load_config
from allwen.demo import QUICK
from allwen.training.plan import dry_run


def test_quick_keeps_the_protocol_and_drops_stage_2():
    full = load_config("preset:demo")
    quick = load_config("preset:demo", QUICK)
    assert quick.train.stage2 is None and full.train.stage2 is not None
    assert quick.scenarios == full.scenarios and len(quick.scenarios["train.lr"]) == 3  # ensembles still built
    assert quick.split.folds == 2 and quick.evaluation.bootstrap == 100
    assert len(dry_run(quick)["units"]) == 6 < len(dry_run(full)["units"])
