"""Offline, a hub download fails at once with the one line that asks for model.weights."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from typer.testing import CliRunner

from allwen.errors import WeightsUnavailableError
from allwen.models import hub
from allwen.models.backbones import create_backbone


@pytest.fixture
def online_settings(monkeypatch):
    """No offline switch set: allwen must find out itself that the hub cannot be reached."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    reachable = hub.reachable  # a test may replace it; the cached original is cleared either way
    reachable.cache_clear()
    yield
    reachable.cache_clear()


def _fails_fast(caplog) -> str:
    caplog.set_level(logging.INFO)
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as err:
        create_backbone("mobilenetv2_100", "hub")
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "\n" not in message and "set `model.weights` to a local .safetensors file" in message
    assert "--set model.weights=/path/to/file.safetensors" in message
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # no retry warnings, none twice
    return message


def test_hf_hub_offline_fails_without_asking_the_network(caplog, monkeypatch):
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("the hub was asked"))
    assert "(HF_HUB_OFFLINE is set)" in _fails_fast(caplog)


def test_unreachable_hub_is_asked_once(online_settings, caplog, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once, here and in CI
    tries = []
    connect = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: tries.append(a) or connect(*a, **k))
    assert "127.0.0.1 could not be reached, one try of 3 s at most" in _fails_fast(caplog)
    _fails_fast(caplog)
    assert len(tries) == 1  # one check per process, not one per unit


def test_this_machine_without_network(online_settings, caplog):
    """The real endpoint, as a user without network meets it (skipped where the hub answers)."""
    if hub.reachable(hub.endpoint()):
        pytest.skip("the model hub is reachable from here")
    assert "huggingface.co could not be reached" in _fails_fast(caplog)


def test_a_cached_download_is_read_without_the_hub(monkeypatch, tmp_path):
    import timm
    from safetensors.torch import save_file

    reference = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    monkeypatch.setattr(hub, "cached_file", lambda hub_id: str(path))
    monkeypatch.setattr(hub, "unavailable", lambda: pytest.fail("a cached file needs no hub check"))
    model = create_backbone("test_efficientnet", "hub")
    for key, value in reference.state_dict().items():
        assert (model.state_dict()[key] == value).all(), key


def test_the_run_command_prints_one_error_line(synth_root, tmp_path, monkeypatch):
    from allwen.cli import app

    sets = [f"data.path={synth_root / 'training_data'}", "model.backbone=mobilenetv2_100", "model.weights=hub",
            "split.folds=2", "scenarios={train.lr: [0.01]}", "data.image_size=32"]
    args = ["run", "demo", "--out", str(tmp_path / "r"), "--quiet"] + [a for s in sets for a in ("--set", s)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "set `model.weights` to a local .safetensors file" in errors[0], result.output
    assert "Retrying" not in result.output and "thrown while requesting" not in result.output


def test_behind_a_proxy_the_proxy_is_asked(online_settings, caplog, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://huggingface.co")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    asked = []
    monkeypatch.setattr(hub, "reachable", lambda url, seconds=hub.CHECK_SECONDS: asked.append(url) or False)
    assert "huggingface.co (through the proxy 127.0.0.1) could not be reached" in _fails_fast(caplog)
    assert asked == ["http://127.0.0.1:9"]
