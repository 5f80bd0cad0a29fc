"""cgroup memory headroom (review 15 #11): page cache is not used memory, and the process's own cgroup counts.

A fake cgroup tree under ``tmp_path``; the expected headrooms are computed here from the numbers written.
"""

from __future__ import annotations

import pytest

from napari_seg_uncertainty.core import _memory

MIB = 1 << 20


def _cgroup(directory, limit, usage, stat, names):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / names[0]).write_text(f"{limit}\n")
    (directory / names[1]).write_text(f"{usage}\n")
    (directory / "memory.stat").write_text("".join(f"{k} {v}\n" for k, v in stat.items()))


@pytest.fixture
def tree(tmp_path, monkeypatch):
    root = tmp_path / "cgroup"
    proc = tmp_path / "proc_self_cgroup"
    monkeypatch.setattr(_memory, "_CGROUP_ROOT", str(root))
    monkeypatch.setattr(_memory, "_PROC_CGROUP", str(proc))
    monkeypatch.setattr(_memory, "_CGROUP_FILES", (
        (str(root / "memory.max"), str(root / "memory.current")),
        (str(root / "memory" / "memory.limit_in_bytes"), str(root / "memory" / "memory.usage_in_bytes")),
    ))  # fmt: skip
    return root, proc


V2 = ("memory.max", "memory.current")
V1 = ("memory.limit_in_bytes", "memory.usage_in_bytes")


def test_v2_own_cgroup_limit_without_inactive_page_cache(tree):
    root, proc = tree
    proc.write_text("0::/user.slice/napari.scope\n")
    _cgroup(root, "max", 9000 * MIB, {"inactive_file": 1}, V2)  # the namespace root: no limit
    _cgroup(root / "user.slice", "max", 5000 * MIB, {"inactive_file": 0}, V2)
    _cgroup(root / "user.slice" / "napari.scope", 1024 * MIB, 700 * MIB,
            {"anon": 300 * MIB, "active_file": 100 * MIB, "inactive_file": 300 * MIB}, V2)  # fmt: skip
    # 1024 - (700 - 300): the 300 MiB of inactive file pages are reclaimable
    assert _memory._cgroup_headroom() == 624 * MIB
    _cgroup(root / "user.slice", 800 * MIB, 500 * MIB, {"inactive_file": 100 * MIB}, V2)  # a tighter parent
    assert _memory._cgroup_headroom() == 400 * MIB


def test_v1_uses_the_hierarchical_inactive_file(tree):
    root, proc = tree
    proc.write_text("5:cpuacct,cpu:/\n4:memory:/docker/abc\n0::/\n")
    _cgroup(root / "memory" / "docker" / "abc", 2048 * MIB, 1500 * MIB,
            {"inactive_file": 10 * MIB, "total_inactive_file": 900 * MIB}, V1)  # fmt: skip
    assert _memory._cgroup_headroom() == (2048 - 600) * MIB


def test_a_namespace_root_and_no_limit(tree):
    root, proc = tree
    proc.write_text("0::/not/visible/here\n")  # cgroup namespace: the mount's root is this process's cgroup
    _cgroup(root, 512 * MIB, 400 * MIB, {"inactive_file": 250 * MIB}, V2)
    assert _memory._cgroup_headroom() == 362 * MIB
    _cgroup(root, "max", 400 * MIB, {}, V2)
    assert _memory._cgroup_headroom() is None
    proc.unlink()  # unreadable /proc/self/cgroup: the root files only
    assert _memory._cgroup_headroom() is None


def test_usage_below_the_page_cache_never_exceeds_the_limit(tree):
    root, proc = tree
    proc.write_text("0::/\n")
    _cgroup(root, 100 * MIB, 50 * MIB, {"inactive_file": 80 * MIB}, V2)  # stat read a moment later
    assert _memory._cgroup_headroom() == 100 * MIB
