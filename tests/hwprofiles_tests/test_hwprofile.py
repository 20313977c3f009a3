from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from hwprofiles import HardwareProfile, ProfileError, list_profiles, load_profile


def _write(tmp_path: Path, body: str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def test_shipped_profiles_are_listed() -> None:
    assert {"cpu", "cpu-openvino", "cpu-torch", "h200"} <= set(list_profiles())
    assert list_profiles() == sorted(list_profiles())


@pytest.mark.parametrize("name", list_profiles())
def test_every_shipped_profile_loads(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.repeats >= 5 and profile.batch_size > 0
    assert re.fullmatch(r"[0-9a-f]{16}", profile.fingerprint())


def test_shipped_profile_values() -> None:
    cpu = load_profile("cpu")
    assert (cpu.device, cpu.backend, cpu.precision, cpu.threads, cpu.batch_size) == (
        "cpu", "onnxruntime", "fp32", 1, 1)
    torch_cpu = load_profile("cpu-torch")
    assert (torch_cpu.device, torch_cpu.backend, torch_cpu.threads) == ("cpu", "torch", 1)
    openvino = load_profile("cpu-openvino")
    assert openvino.model_dump() == {**cpu.model_dump(), "name": "cpu-openvino",
                                     "backend": "openvino", "description": openvino.description}
    assert "OpenVINO" in openvino.description and "f32" in openvino.description
    h200 = load_profile("h200")
    assert (h200.device, h200.backend, h200.precision, h200.batch_size) == (
        "cuda", "torch", "fp16", 1)
    assert h200.resources == {"CPU": 1.0, "GPU": 1.0}


def test_load_from_path_defaults_name_to_stem(tmp_path: Path) -> None:
    path = _write(tmp_path, "device: cpu\nbackend: torch\nthreads: 2\n", name="laptop.yaml")
    profile = load_profile(path)
    assert profile.name == "laptop"
    assert profile.threads == 2 and profile.warmup == 20 and profile.repeats == 100
    assert profile.resources == {"CPU": 1.0}
    assert load_profile(str(path)) == profile


def test_unknown_name_lists_available_profiles() -> None:
    pattern = r"Unknown hardware profile 'tpu-v9'.*cpu, cpu-openvino, cpu-torch"
    with pytest.raises(ProfileError, match=pattern):
        load_profile("tpu-v9")


def test_profile_error_is_a_value_error() -> None:
    assert issubclass(ProfileError, ValueError)


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ("device: cpu\nbackend: torch\nprecision: fp64\n",
         r"precision: must be one of 'fp32', 'fp16', 'int8', got 'fp64'"),
        ("device: gpu\nbackend: torch\n", r"device: must be one of 'cpu', 'cuda', got 'gpu'"),
        ("backend: torch\n", r"device: required key is missing \(one of 'cpu', 'cuda'\)"),
        ("device: cpu\nbackend: torch\nthread: 1\n",
         (r"thread: unknown key \(allowed keys: name, description, device, backend, precision, "
         r"batch_size, threads, warmup, repeats, min_sample_ms, windows, window_pause_ms, max_cv, "
         r"max_attempts, max_load, "
         r"pin_cores, resources, channel_multiple\)")),
        ("device: cpu\nbackend: torch\nbatch_size: 0\n", r"batch_size: must be > 0, got 0"),
        ("device: cpu\nbackend: torch\nrepeats: 3\n", r"repeats: must be >= 5, got 3"),
        ("device: cpu\nbackend: torch\nwarmup: -1\n", r"warmup: must be >= 0, got -1"),
        ("device: cpu\nbackend: torch\nthreads: 0\n", r"threads: must be > 0, got 0"),
        ("device: cpu\nbackend: 'tf lite'\n", r"backend: string should match pattern"),
        ("device: cpu\nbackend: torch\nprecision: fp16\n",
         r"precision: 'fp16' needs device 'cuda'"),
        ("device: cpu\nbackend: torch\nresources: {CPU: -1}\n",
         r"resources: resource 'CPU' must be a finite amount >= 0, got -1"),
        ("- cpu\n- torch\n", r"must be a YAML mapping of fields \(name, description, device"),
        ("device: [cpu\n", r"not valid YAML"),
    ],
)
def test_bad_file_names_file_key_and_allowed_values(
    tmp_path: Path, body: str, pattern: str
) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(ProfileError, match=re.escape(str(path)) + r": .*" + pattern) as info:
        load_profile(path)
    assert "\n" not in str(info.value)  # one paragraph


def test_missing_file_is_a_profile_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(ProfileError, match=re.escape(str(missing)) + r": cannot read"):
        load_profile(missing)


def test_profile_is_frozen_and_forbids_extra_fields() -> None:
    profile = load_profile("cpu")
    with pytest.raises(ValidationError):
        profile.threads = 4  # type: ignore[misc]
    with pytest.raises(ValidationError, match="gpus"):
        HardwareProfile(name="x", device="cpu", backend="torch", gpus=1)  # type: ignore[call-arg]


def test_fingerprint_covers_measurement_fields_only() -> None:
    base = load_profile("cpu")
    fields = base.model_dump()
    relabelled = HardwareProfile(**{**fields, "name": "other", "description": "same setup",
                                    "resources": {"CPU": 2, "hw_laptop": 1}})
    assert relabelled.fingerprint() == base.fingerprint()
    for change in ({"threads": 2}, {"batch_size": 8}, {"precision": "int8"}, {"repeats": 50},
                   {"warmup": 0}, {"backend": "torch"}, {"windows": 1}):
        assert HardwareProfile(**{**fields, **change}).fingerprint() != base.fingerprint(), change


def test_fingerprint_is_stable_across_processes_and_versions() -> None:
    # A literal pins the hash: it must not depend on Python's per-process hash seed.
    assert load_profile("cpu").fingerprint() == "8eb1c17b16960fa1"
