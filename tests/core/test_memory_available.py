"""core._memory honours the address-space limit (RLIMIT_AS) and the cgroup limit (issue 15: never killed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from napari_seg_uncertainty.core import _memory
from napari_seg_uncertainty.core._memory import OutputTooLargeError, available_memory_bytes, check_allocation

LINUX = sys.platform.startswith("linux")

CHILD = """
import resource, sys
from napari_seg_uncertainty.core import _memory
soft, _ = resource.getrlimit(resource.RLIMIT_AS)
print(soft, _memory._vm_size(), _memory.available_memory_bytes())
try:
    _memory.check_allocation(soft, what="an array as large as the limit", cause="n=1", advice="ask for less")
except MemoryError as exc:
    print("refused:", exc)
"""


def _cap(limit: int):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))

    return apply


@pytest.mark.skipif(not LINUX, reason="RLIMIT_AS and /proc/self/status are Linux's")
def test_available_memory_is_capped_by_rlimit_as():
    limit = 2 << 30
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2] / "src"))
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, env=env,
                            preexec_fn=_cap(limit))  # fmt: skip
    assert result.returncode == 0, result.stderr
    soft, vm_size, available = (int(v) for v in result.stdout.splitlines()[0].split())
    assert soft == limit and 0 < vm_size < limit
    assert available <= limit - vm_size  # the headroom under the limit, measured independently here
    assert available >= limit - vm_size - (64 << 20)  # ... and not much less (VmSize moved a little since)
    assert "refused: n=1: an array as large as the limit would need 2.0 GiB" in result.stdout


def test_unlimited_address_space_leaves_available_memory_to_ram(monkeypatch):
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda _: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert _memory._address_space_headroom() is None


def test_cgroup_limit_caps_available_memory(tmp_path, monkeypatch):
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text(str(3 << 20))
    usage.write_text(str(1 << 20))
    monkeypatch.setattr(_memory, "_CGROUP_FILES", ((str(limit), str(usage)),))
    assert available_memory_bytes() == 2 << 20
    with pytest.raises(OutputTooLargeError, match="more than the 2.0 MiB of memory available"):
        check_allocation(2 << 20, what="a buffer", cause="n=2")
    limit.write_text("max")  # no limit: RAM (and RLIMIT_AS) decide
    assert available_memory_bytes() > 2 << 20


def test_address_space_headroom_under_a_fake_limit(monkeypatch):
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda _: (5 << 30, resource.RLIM_INFINITY))
    monkeypatch.setattr(_memory, "_vm_size", lambda: 1 << 30)
    assert _memory._address_space_headroom() == 4 << 30
    monkeypatch.setattr(_memory, "_vm_size", lambda: 6 << 30)
    assert _memory._address_space_headroom() == 0
