"""Turn a device setting (`cpu`, `cuda`, `cuda:N`, `mps`, `auto`) into a torch device."""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Iterator

import torch

from memento.graph.errors import RunError

log = logging.getLogger(__name__)


class DeviceError(RunError, ValueError):
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


_threads_lock = threading.Lock()
_threads_users = 0
_threads_before = 0


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block with torch limited to `count` intra-op threads (0: leave torch as it is).

    A run's torch work is one query encoding or a few steps of a small MLP: with every core, the
    threads mostly wait on each other and on other processes (10x to 18x slower on a busy 2-core
    machine). The setting is process-wide in torch, so it is taken by the first block to enter
    and given back by the last to leave."""
    global _threads_users, _threads_before
    if count <= 0:
        yield
        return
    with _threads_lock:
        if _threads_users == 0:
            _threads_before = torch.get_num_threads()
            torch.set_num_threads(count)
        _threads_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0 and torch.get_num_threads() != _threads_before:
                torch.set_num_threads(_threads_before)
