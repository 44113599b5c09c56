
import pytest

from allwen.config import ConfigError, expand_scenarios, list_presets, load_config


def test_defaults_and_overrides_apply_in_order(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  lr: 0.01\n  batch_size: 8\ndata:\n  path: images\n")
    cfg = load_config(cfg_file, ["train.lr=1e-4"])
    assert cfg.train.lr == pytest.approx(1e-4)  # --set beats the file
    assert cfg.train.batch_size == 8  # file beats the default
    assert cfg.train.optimizer == "adam"  # default
    assert cfg.data.path == str((tmp_path / "images").resolve())  # relative to the config file


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"train\.lrr: unknown key"):
        load_config(None, ["train.lrr=1"])


def test_bad_value_names_key_value_and_allowed():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.optimizer=adamm"])
    text = str(err.value)
    assert "train.optimizer" in text and "'adamm'" in text and "rmsprop" in text


def test_bad_type_and_range():
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config(None, ["train.batch_size=zero"])
    with pytest.raises(ConfigError, match="split.test"):
        load_config(None, ["split.test=1.5"])


def test_scenarios_expand_to_a_grid():
    cfg = load_config(None, ["scenarios={train.lr: [0.001, 0.0001], train.optimizer: [adam, sgd]}"])
    grid = expand_scenarios(cfg)
    assert [name for name, _ in grid] == [
        "lr=0.001_optimizer=adam", "lr=0.001_optimizer=sgd", "lr=0.0001_optimizer=adam", "lr=0.0001_optimizer=sgd",
    ]
    assert grid[3][1].train.lr == pytest.approx(1e-4) and grid[3][1].train.optimizer == "sgd"
    assert grid[0][1].scenarios == {}


def test_unknown_scenario_key():
    with pytest.raises(ConfigError, match="scenarios.train.lrr"):
        load_config(None, ["scenarios={train.lrr: [1, 2]}"])


def test_every_preset_loads():
    names = list_presets()
    assert {"experiment_a", "experiment_b", "experiment_c", "experiment_d", "experiment_e", "demo"} <= set(names)
    for name in names:
        load_config(name)


def test_missing_file_lists_presets():
    with pytest.raises(ConfigError, match="experiment_a"):
        load_config("nope.yaml")


def test_a_config_that_trains_nothing_is_refused():
    with pytest.raises(ConfigError, match="train nothing"):
        load_config(None, ["train.stage1.epochs=0", "train.stage2=null"])
    load_config(None, ["train.stage1.epochs=0"])  # stage 2 alone is fine


def test_unfreeze_is_a_fraction_and_blocks_a_count():
    assert load_config(None, ["train.unfreeze=1"]).train.unfreeze == 1.0
    assert load_config(None, ["train.unfreeze_blocks=2"]).train.unfreeze_blocks == 2
    with pytest.raises(ConfigError, match="train.unfreeze"):
        load_config(None, ["train.unfreeze=3"])


def test_scenario_folder_names_never_collide():
    grid = expand_scenarios(load_config(None, ["scenarios={train.lr: [0.1, 0.10000001]}"]))
    assert len({name for name, _ in grid}) == 2


def test_run_level_keys_cannot_vary_in_a_grid():
    for key in ("split.seed", "data.view", "evaluation.bootstrap", "ensemble.champion_by"):
        with pytest.raises(ConfigError, match="one per run"):
            load_config(None, [f"scenarios={{{key}: [a, b]}}"])
    load_config(None, ["scenarios={data.image_size: [32, 64], model.head: [sigmoid, softmax]}"])


def test_a_section_scenario_varies_several_keys_together_with_readable_names(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    import os

    here = os.getcwd()
    os.chdir(tmp_path)  # --set paths are relative to the shell
    try:
        cfg = load_config(None, [
            "scenarios={model: [{backbone: test_efficientnet, weights: w.safetensors, data.image_size: 32}, "
            "{backbone: test_vit, weights: none, data.image_size: 48}], train.lr: [0.001, 0.01]}",
        ])
    finally:
        os.chdir(here)
    grid = expand_scenarios(cfg)
    assert [name for name, _ in grid] == [
        "backbone=test_efficientnet_image_size=32_lr=0.001", "backbone=test_efficientnet_image_size=32_lr=0.01",
        "backbone=test_vit_image_size=48_lr=0.001", "backbone=test_vit_image_size=48_lr=0.01",
    ]
    first, last = grid[0][1], grid[-1][1]
    assert (first.model.backbone, first.model.weights, first.data.image_size) == (
        "test_efficientnet", str(weights.resolve()), 32)
    assert (last.model.backbone, last.model.weights, last.data.image_size, last.train.lr) == ("test_vit", "none", 48, 0.01)
    assert first.model.head == cfg.model.head  # keys not named keep the run's value


def test_a_section_scenario_names_files_only_when_nothing_else_differs():
    cfg = load_config(None, ["scenarios={model: [{backbone: a_net, weights: /w/one.safetensors}, "
                             "{backbone: a_net, weights: /w/two.safetensors}]}"])
    assert [name for name, _ in expand_scenarios(cfg)] == ["weights=-w-one.safetensors", "weights=-w-two.safetensors"]


@pytest.mark.parametrize("value, message", [
    ("{model: [mobilenetv2_100]}", "give a list of mappings"),
    ("{model: [{backbon: x}]}", "scenarios.model.backbon: unknown key"),
    ("{model: [{data.path: x}]}", "only how units are trained can vary"),
    ("{split: [{folds: 2}]}", "only how units are trained can vary|must be section.key"),
])
def test_a_bad_section_scenario_is_a_clear_error(value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"scenarios={value}"])
