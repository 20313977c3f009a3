"""Data, training and evaluation loops, cost and latency measurement, trial evaluators."""

from __future__ import annotations

from evaluators._accuracy import accuracy, predict, recalibrate_batchnorm
from evaluators._cost import count_macs, count_params, model_size_bytes
from evaluators._data import DataError, DataSplits, Normalization, load_dataset
from evaluators._io import atomic_write, atomic_write_bytes, atomic_write_text
from evaluators._proctitle import process_title
from evaluators._supernet import SandwichConfig, SandwichStep, SupernetResult, train_supernet
from evaluators._train import NonFiniteLossError, OptimConfig, TrainStep, cross_entropy_step, train
from evaluators._trial import SupernetEvaluator, TabularEvaluator, TrialEvaluator

__all__ = [
    "DataError", "DataSplits", "NonFiniteLossError", "Normalization", "OptimConfig",
    "SandwichConfig", "SandwichStep", "SupernetEvaluator", "SupernetResult", "TabularEvaluator",
    "TrainStep", "TrialEvaluator", "accuracy", "atomic_write", "atomic_write_bytes",
    "atomic_write_text", "count_macs", "count_params", "cross_entropy_step", "load_dataset",
    "model_size_bytes", "predict", "process_title", "recalibrate_batchnorm", "train", "train_supernet",
]
