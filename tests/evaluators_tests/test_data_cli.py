"""Malformed data through the real ``nas`` command: exit status 2 and a message naming it."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from numpy.lib import format as npy_format
from PIL import Image

from nas._cli import main
from nas._config import validate_config
from nas._errors import ConfigError

Capture = pytest.CaptureFixture[str]
QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


def write_config(tmp_path: Path, data: dict[str, object]) -> Path:
    """Returns a copy of the quickstart config whose ``data:`` is ``data``."""
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["data"] = data
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_search(tmp_path: Path, data: dict[str, object], capsys: Capture) -> tuple[int, str]:
    """Returns the exit status of ``nas search`` and its output on one line."""
    config = write_config(tmp_path, data)
    status = main(["search", str(config), "--run-dir", str(tmp_path / "run")])
    captured = capsys.readouterr()
    return status, " ".join((captured.out + captured.err).split())


def test_npz_with_nan_exits_2_naming_the_file(tmp_path: Path, capsys: Capture) -> None:
    x = np.zeros((30, 8, 8), np.float32)
    x[4, 2, 3] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.repeat(np.arange(3), 10))
    status, output = run_search(tmp_path, {"dataset": "npz", "path": "nan.npz"}, capsys)
    assert status == 2
    assert "error:" in output and "internal error" not in output
    assert f"{tmp_path / 'nan.npz'}" in output and "x[4, 2, 3] = nan" in output


def test_npz_zip_bomb_exits_2_before_allocating(tmp_path: Path, capsys: Capture) -> None:
    header = io.BytesIO()
    npy_format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (3000, 512, 512)}
    )
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", header.getvalue() + bytes(1 << 16))
        buffer = io.BytesIO()
        np.save(buffer, np.zeros(3000, np.int64))
        archive.writestr("y.npy", buffer.getvalue())
    status, output = run_search(tmp_path, {"dataset": "npz", "path": "bomb.npz"}, capsys)
    assert status == 2
    assert "bomb.npz" in output and "5.9 GiB" in output and "data.max_bytes=4294967296" in output


def test_imagefolder_mixing_modes_exits_2(tmp_path: Path, capsys: Capture) -> None:
    for name in ("a", "b"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), 10 * i).save(tmp_path / "images" / name / f"{i}.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "b" / "colour.jpg")
    status, output = run_search(tmp_path, {"dataset": "imagefolder", "path": "images"}, capsys)
    assert status == 2
    assert "mix grayscale and colour" in output and "colour.jpg" in output


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"dataset": "imagefolder"}, "data.path: required when dataset is 'imagefolder'"),
        ({"dataset": "csv", "path": "x.csv"}, "'digits', 'npz' or 'imagefolder'"),
        ({"dataset": "digits", "path": "images"}, "data.path: only used with dataset"),
        ({"dataset": "npz", "path": "d.npz", "max_bytes": 10}, "data.max_bytes"),
    ],
)
def test_data_config_names_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match="data") as raised:
        validate_config({"data": data})
    assert message in str(raised.value)
    assert str(raised.value).count("data.") >= 1
