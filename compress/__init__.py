"""Compression: pruning, distillation, INT8 calibration, ONNX / TensorRT export, the pipeline."""

from __future__ import annotations

from compress._base import CompressionStage, ModelContext, StageOutput, StageSkipped
from compress._distill import DistillConfig, DistillStep, distill, kd_loss
from compress._export import export_onnx, preprocess, read_metadata, set_metadata
from compress._int8 import export_modelopt_onnx, quantize_modelopt, quantize_onnxruntime
from compress._pipeline import CompressionPipeline, StageRecord, onnx_accuracy
from compress._pruning import LatencyTarget, MacsTarget, PruneResult, prune
from compress._settings import CompressSettings, DistillSettings, PruneSettings
from compress._structure import load_pruned, save_pruned
from compress._tensorrt import build_engine, tensorrt_unavailable_reason

__all__ = [
    "CompressSettings", "CompressionPipeline", "CompressionStage", "DistillConfig",
    "DistillSettings", "DistillStep", "LatencyTarget", "MacsTarget", "ModelContext",
    "PruneResult", "PruneSettings", "StageOutput", "StageRecord", "StageSkipped",
    "build_engine", "distill", "export_modelopt_onnx", "export_onnx", "kd_loss", "load_pruned",
    "onnx_accuracy", "preprocess", "prune", "quantize_modelopt", "quantize_onnxruntime",
    "read_metadata", "save_pruned", "set_metadata", "tensorrt_unavailable_reason",
]
