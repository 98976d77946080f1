"""The one place a device is chosen: auto, the OASIS_DEVICE override, clear errors."""

from __future__ import annotations

import pytest
import torch

from oasis_lib.device import get_device


def test_auto_without_accelerators_is_the_cpu(monkeypatch):
    monkeypatch.delenv("OASIS_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert get_device() == torch.device("cpu")
    assert get_device("auto") == torch.device("cpu")


def test_environment_overrides_auto_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("OASIS_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")  # would be cuda without the variable
    assert get_device("auto") == torch.device("cpu")  # TrainConfig.device defaults to "auto"
    assert get_device("cuda") == torch.device("cuda")  # an explicit choice wins
    monkeypatch.delenv("OASIS_DEVICE")
    assert get_device() == torch.device("cuda")


def test_explicit_devices(monkeypatch):
    monkeypatch.delenv("OASIS_DEVICE", raising=False)
    assert get_device("cpu") == torch.device("cpu")
    assert get_device(torch.device("cpu")) == torch.device("cpu")
    assert get_device("CPU") == torch.device("cpu")


def test_unavailable_or_unknown_devices_raise_clear_errors(monkeypatch):
    monkeypatch.delenv("OASIS_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"'cuda' was asked for.*is_available\(\) is False"):
        get_device("cuda:1")
    with pytest.raises(ValueError, match="'mps' was asked for"):
        get_device("mps")
    with pytest.raises(ValueError, match=r"unknown device 'tpu'; choose one of"):
        get_device("tpu")
    monkeypatch.setenv("OASIS_DEVICE", "gpu")
    with pytest.raises(ValueError, match="unknown device"):
        get_device()
