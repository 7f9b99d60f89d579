"""Turn a device setting (`cpu`, `cuda`, `cuda:N`, `mps`, `auto`) into a torch device."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class DeviceError(ValueError):
    """A device setting that this machine cannot honour."""


def resolve_device(setting: str) -> torch.device:
    """Return the torch device for `setting`.

    `auto` picks CUDA, then MPS, then CPU. An explicit `cuda`/`mps` on a machine without one
    is refused with a message, not silently downgraded: the user asked for it by name.
    """
    name = (setting or "cpu").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise DeviceError(
            f"unknown device {setting!r}: use cpu, cuda, cuda:N, mps or auto"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {setting!r} asked for, but torch sees no CUDA GPU here "
                f"(torch {torch.__version__}): set the device to cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {setting!r} asked for, but only {torch.cuda.device_count()} CUDA "
                "device(s) are visible: pick a lower index or use auto"
            )
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise DeviceError(f"device {setting!r} asked for, but MPS is not available: use cpu or auto")
    if device.type not in {"cpu", "cuda", "mps"}:
        raise DeviceError(f"unsupported device {setting!r}: use cpu, cuda, cuda:N, mps or auto")
    return device
