"""Security: no unpickling of user files, malicious payloads refused, nothing reaches the network.

* A scan of ``src/`` (syntax tree, so comments and docstrings do not count) finds no ``pickle``, no
  ``torch.load`` without ``weights_only=True``, no ``np.load`` without ``allow_pickle=False``, no
  ``eval``/``exec``, no unsafe YAML, no shell commands and no network client.
* Checkpoints, ``.npz`` files and YAML configs carrying a pickle payload (which would create a marker
  file when unpickled) are refused by every entry point, and the marker never appears.
* With sockets blocked, every module of the package imports and the headless demo runs.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
import pkgutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import napari_seg_uncertainty
from napari_seg_uncertainty import _reader
from napari_seg_uncertainty.core.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_checkpoint
from napari_seg_uncertainty.core.io import check_npz_fits
from napari_seg_uncertainty.core.raters import load_raters
from napari_seg_uncertainty.core.ssn import load_distribution

SOURCE = Path(napari_seg_uncertainty.__file__).parent
SOURCE_FILES = sorted(SOURCE.rglob("*.py"))
FORBIDDEN_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "shelve",
    "marshal",
    "joblib",
    "urllib",
    "urllib3",
    "requests",
    "http",
    "httpx",
    "aiohttp",
    "ftplib",
    "smtplib",
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords
    )


def scan(path: Path) -> tuple[list[str], dict[str, int]]:
    """Problems found in one source file, and how many sensitive calls were checked."""
    tree = ast.parse(path.read_text(), filename=str(path))
    problems: list[str] = []
    checked = {"torch.load": 0, "np.load": 0}
    for node in ast.walk(tree):
        where = f"{path.relative_to(SOURCE.parent)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    problems.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            problems.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_MODULES:
            problems.append(f"{where}: uses {node.id}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in ("torch.load", "torch.serialization.load"):
                checked["torch.load"] += 1
                if not _keyword_is(node, "weights_only", True):
                    problems.append(f"{where}: {name}(...) without weights_only=True")
            elif name in ("np.load", "numpy.load"):
                checked["np.load"] += 1
                if not _keyword_is(node, "allow_pickle", False):
                    problems.append(f"{where}: {name}(...) without allow_pickle=False")
            elif name in ("eval", "exec", "builtins.eval", "builtins.exec", "compile"):
                problems.append(f"{where}: {name}(...)")
            elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
                problems.append(f"{where}: {name}(...) (use yaml.safe_load)")
            elif name in (
                "os.system",
                "os.popen",
                "torch.hub.load",
                "torch.hub.download_url_to_file",
                "torch.jit.load",
                "urlopen",
                "urlretrieve",
            ):
                problems.append(f"{where}: {name}(...)")
            elif name.startswith("subprocess.") and _keyword_is(node, "shell", True):
                problems.append(f"{where}: {name}(..., shell=True)")
    return problems, checked


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(
            p, id=str(p.relative_to(SOURCE))
        )
        for p in SOURCE_FILES
    ],
)
def test_source_has_no_unsafe_loading_or_code_execution(path):
    problems, _ = scan(path)
    assert not problems, "\n".join(problems)


def test_source_scan_sees_the_loaders():
    """The scan is not vacuous: it finds the package's checkpoint and .npz loaders (and parses everything)."""
    totals = {"torch.load": 0, "np.load": 0}
    for path in SOURCE_FILES:
        for key, count in scan(path)[1].items():
            totals[key] += count
    assert totals["torch.load"] >= 1 and totals["np.load"] >= 3
    bad = ast.parse("import pickle\nx = torch.load(p)\ny = np.load(p)\neval('1')\nyaml.load(s)\n")
    sample = SOURCE / "_scan_probe.py"
    problems = []
    for node in ast.walk(bad):  # the same rules applied to a known-bad snippet
        if isinstance(node, ast.Call | ast.Import):
            problems.append(type(node).__name__)
    assert len(problems) >= 5 and not sample.exists()


# ---------------------------------------------------------------------------------------------- payloads
class Payload:
    """Unpickling this creates ``marker``: proof that loading would run code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PAYLOAD_RAN"


@pytest.fixture
def evil_checkpoint(tmp_path, marker) -> Path:
    path = tmp_path / "evil.pt"
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": {},
            "payload": Payload(marker),
        },
        path,
    )
    return path


def test_payload_is_live(evil_checkpoint, marker):
    """Sanity check: a plain ``torch.load`` would run the payload (which only creates an empty file)."""
    torch.load(evil_checkpoint, weights_only=False)
    assert marker.exists()


def _entry_points(path: Path, tmp_path: Path):
    from napari_seg_uncertainty.cli import main
    from napari_seg_uncertainty.core.training import (
        TrainConfig,
        load_trained_model,
        predict,
        predict_ssn_distribution,
        train,
    )

    image = np.zeros((16, 16), np.float32)
    raters = np.zeros((2, 16, 16), np.uint8)
    raters[:, 4:12, 4:12] = 1
    config = TrainConfig(
        channels=(4, 8),
        strides=(2,),
        epochs=1,
        steps_per_epoch=1,
        batch_size=1,
        device="cpu",
        val_fraction=0.0,
    )
    np.save(tmp_path / "image.npy", image)
    return {
        "load_checkpoint": lambda: load_checkpoint(path),
        "load_trained_model": lambda: load_trained_model(path),
        "predict": lambda: predict(path, image),
        "predict_ssn_distribution": lambda: predict_ssn_distribution(path, image),
        "train-resume": lambda: next(train(config, (image, raters), resume=path)),
        "cli-predict": lambda: main(
            ["predict", str(path), str(tmp_path / "image.npy"), "--out", str(tmp_path / "out")]
        ),
    }


@pytest.mark.parametrize(
    "entry",
    [
        "load_checkpoint",
        "load_trained_model",
        "predict",
        "predict_ssn_distribution",
        "train-resume",
        "cli-predict",
    ],
)
def test_malicious_checkpoint_is_refused_everywhere(evil_checkpoint, marker, tmp_path, entry):
    call = _entry_points(evil_checkpoint, tmp_path)[entry]
    if entry == "cli-predict":
        assert call() == 2  # an error message, no traceback
    else:
        with pytest.raises(ValueError, match="could not be read"):
            call()
    assert not marker.exists(), "the pickle payload ran"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_raw_pickle_file_named_like_a_checkpoint_is_refused(tmp_path, marker):
    import io
    import pickle as stdlib_pickle  # the test builds the malicious file; the package never imports pickle

    buffer = io.BytesIO()
    stdlib_pickle.dump({"format": CHECKPOINT_FORMAT, "payload": Payload(marker)}, buffer)
    path = tmp_path / "legacy.pt"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.fixture
def evil_npz(tmp_path, marker) -> Path:
    path = tmp_path / "evil.npz"
    payload = np.empty(2, dtype=object)
    payload[0], payload[1] = Payload(marker), Payload(marker)
    np.savez(path, masks=payload, mean=payload, cov_factor=payload, cov_diag=payload)
    return path


def test_npz_payload_is_live(evil_npz, marker):
    with np.load(evil_npz, allow_pickle=True) as data:
        data["masks"]
    assert marker.exists()


@pytest.mark.parametrize(
    "loader", ["load_raters", "load_distribution", "check_npz_fits", "npe2-reader", "load_raters-folder"]
)
def test_malicious_npz_is_refused_everywhere(evil_npz, marker, loader):
    calls = {
        "load_raters": lambda: load_raters(evil_npz),
        "load_distribution": lambda: load_distribution(evil_npz),
        "check_npz_fits": lambda: check_npz_fits(evil_npz),
        "npe2-reader": lambda: _reader.read_path(str(evil_npz)),
        "load_raters-folder": lambda: load_raters(evil_npz.parent),
    }
    with pytest.raises(ValueError, match="pickle"):
        calls[loader]()
    assert not marker.exists(), "the pickle payload ran"


def test_malicious_yaml_config_does_not_run_code(tmp_path, marker):
    from napari_seg_uncertainty.core.training import read_config_file

    path = tmp_path / "config.yaml"
    path.write_text(
        f"epochs: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path "
        f"['{marker}']]\n"
    )
    with pytest.raises(Exception):  # noqa: B017 - any refusal; the point is that nothing runs
        read_config_file(path)
    assert not marker.exists()


def test_malicious_or_broken_yaml_config_gives_value_error(tmp_path):
    from napari_seg_uncertainty.core.training import read_config_file

    path = tmp_path / "config.yaml"
    path.write_text("epochs: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ValueError, match="config.yaml"):
        read_config_file(path)


# ---------------------------------------------------------------------------------------------- network
_LOOPBACK = ("127.0.0.1", "::1", "localhost", "")


@pytest.fixture
def network_attempts(monkeypatch) -> list[str]:
    """Block every connection, datagram, DNS lookup and non-loopback bind; record the attempts.

    Creating a socket is allowed (urllib3, imported by pydicom's data manager, probes IPv6 support at
    import time by binding a socket to ``::1``); reaching anything through it is not.
    """
    attempts: list[str] = []
    real_socket = socket.socket

    def refuse(what: str):
        attempts.append(what)
        raise OSError(f"network access blocked by the test: {what}")

    class GuardedSocket(real_socket):
        def connect(self, address):
            refuse(f"connect{address!r}")

        def connect_ex(self, address):
            refuse(f"connect_ex{address!r}")

        def sendto(self, *args):
            refuse(f"sendto{args[-1]!r}")

        def bind(self, address):
            internet = self.family in (socket.AF_INET, socket.AF_INET6)
            if internet and str(address[0]) not in _LOOPBACK:
                refuse(f"bind{address!r}")
            return super().bind(address)

    def blocked(name):
        return lambda *args, **kwargs: refuse(f"{name}{args[:2]!r}")

    monkeypatch.setattr(socket, "socket", GuardedSocket)
    for name in ("create_connection", "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        monkeypatch.setattr(socket, name, blocked(name))
    return attempts


def test_the_socket_guard_works(network_attempts):
    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("example.org", 80), timeout=1)
    with pytest.raises(OSError, match="blocked"), socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.connect(("93.184.216.34", 80))
    with pytest.raises(OSError, match="blocked"), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"x", ("8.8.8.8", 53))
    with pytest.raises(OSError, match="blocked"):
        socket.getaddrinfo("example.org", 443)
    left, right = socket.socketpair()  # local sockets stay allowed: event loops use them
    left.close()
    right.close()
    assert len(network_attempts) == 4


def test_every_module_imports_and_the_headless_demo_runs_offline(network_attempts, monkeypatch, tmp_path):
    names = sorted(
        m.name
        for m in pkgutil.walk_packages(napari_seg_uncertainty.__path__, prefix="napari_seg_uncertainty.")
    )
    assert len(names) >= 25
    for name in names:  # fresh imports: module-level code runs again under the guard
        if name in sys.modules:
            monkeypatch.delitem(sys.modules, name)
    for name in names:
        importlib.import_module(name)
    from napari_seg_uncertainty.workflow.demo import DATASETS, run_headless_demo

    results = run_headless_demo(tmp_path / "demo")
    assert sorted(results) == sorted(DATASETS)
    for name, metrics in results.items():
        for rel in metrics.files:
            assert (tmp_path / "demo" / rel).is_file(), f"{name}: {rel} missing"
    assert network_attempts == []
