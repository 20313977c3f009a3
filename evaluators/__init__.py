"""Data, training and evaluation loops, cost and latency measurement, trial evaluators, and the
one ONNX exporter and onnxruntime quantiser that compression and the latency meter share."""

from __future__ import annotations

from evaluators._accuracy import accuracy, onnx_accuracy, predict, recalibrate_batchnorm
from evaluators._checksums import digests, file_digest, mismatched
from evaluators._cost import count_macs, count_params, model_size_bytes, weights_mb
from evaluators._data import DATASETS, DataSplits, Normalization, load_dataset
from evaluators._data_error import DEFAULT_MAX_BYTES, DataError
from evaluators._energy import EnergyUnavailable, energy_unavailable_reason, measure_energy_mj
from evaluators._export import DEFAULT_OPSET, export_onnx, preprocess, read_metadata, set_metadata
from evaluators._inherited import inherited_subnet
from evaluators._io import (
    WriteError, atomic_write, atomic_write_bytes, atomic_write_text, log_stdout,
)
from evaluators._memory import MemoryUnavailable, memory_unavailable_reason, peak_memory_mb
from evaluators._plugins import PluginError, import_plugins
from evaluators._proctitle import process_title
from evaluators._quantize import quantize_onnxruntime
from evaluators._structure import structure_key
from evaluators._supernet import (
    SandwichConfig,
    SandwichStep,
    SupernetResult,
    shrunk_choices,
    train_supernet,
)
from evaluators._train import NonFiniteLossError, OptimConfig, TrainStep, cross_entropy_step, train
from evaluators._trial import SupernetEvaluator, TabularEvaluator, TrialEvaluator

__all__ = [
    "DATASETS", "DEFAULT_MAX_BYTES", "DEFAULT_OPSET", "DataError", "DataSplits",
    "EnergyUnavailable", "MemoryUnavailable",
    "NonFiniteLossError", "Normalization",
    "OptimConfig", "PluginError", "SandwichConfig", "SandwichStep", "SupernetEvaluator",
    "SupernetResult", "TabularEvaluator", "TrainStep", "TrialEvaluator", "WriteError", "accuracy",
    "atomic_write", "atomic_write_bytes", "atomic_write_text", "count_macs", "count_params",
    "digests", "file_digest", "mismatched",
    "cross_entropy_step", "energy_unavailable_reason", "export_onnx", "import_plugins",
    "inherited_subnet",
    "load_dataset", "log_stdout", "measure_energy_mj", "memory_unavailable_reason",
    "model_size_bytes", "onnx_accuracy", "peak_memory_mb", "predict", "preprocess",
    "process_title",
    "quantize_onnxruntime", "read_metadata", "recalibrate_batchnorm", "set_metadata",
    "structure_key", "train",
    "shrunk_choices", "train_supernet", "weights_mb",
]
