"""The report's configuration says which stages trained on augmented images (issue 18)."""

from allwen.config import load_config
from allwen.report.sections import augmentation_text


def test_the_report_says_whether_stage1_was_augmented():
    augmented = augmentation_text(load_config("experiment_a").model_dump(mode="json"))
    assert augmented == ("flips_color: stage 1 augmented (the frozen backbone runs on every augmented batch); "
                         "stage 2 augmented")
    cached = augmentation_text(load_config("experiment_a", ["train.stage1.augment=false"]).model_dump(mode="json"))
    assert cached.startswith("flips_color: stage 1 not augmented (cached features")
    assert augmentation_text({"data": {"augment": "none"}, "train": {}}) == "none"
    old = {"data": {"augment": "flips_color"}, "train": {"stage1_augment": False, "stage1": {"epochs": 3}, "stage2": None}}
    assert augmentation_text(old) == "flips_color: stage 1 not augmented (cached features, train.stage1.augment: false)"
