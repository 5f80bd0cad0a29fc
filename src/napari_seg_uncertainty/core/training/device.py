"""Where training runs: the torch device, and the rank and world size of a ``torchrun`` job."""

from __future__ import annotations

import torch

from .._validation import describe

__all__ = ["distributed_rank_world", "resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Pick the torch device: ``"auto"`` tries CUDA, then Apple MPS, then CPU.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` or any torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If the device string is invalid or the device is not available here.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str):
        name = device.strip().lower()
    else:
        raise TypeError(f"device must be a string such as 'auto' or 'cuda:0', got {describe(device)}.")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}.") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} was asked for but CUDA is not available; use 'auto' or 'cpu'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s).")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} was asked for but MPS is not available; use 'auto' or 'cpu'.")
    return dev


def distributed_rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of an initialized ``torch.distributed`` process group, else ``(0, 1)``.

    Examples
    --------
    >>> distributed_rank_world()
    (0, 1)
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
