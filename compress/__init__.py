"""Compression: pruning, distillation, INT8 calibration, ONNX / TensorRT export, the pipeline."""

from __future__ import annotations

from compress._base import CompressionStage, ModelContext, StageOutput, StageSkipped
from compress._distill import DistillConfig, DistillStep, distill, kd_loss
from compress._importance import (
    ImportanceCriterion,
    get_importance,
    list_importances,
    register_importance,
)
from compress._int8 import export_modelopt_onnx, quantize_modelopt
from compress._latency_pruning import LatencyAwarePruner
from compress._latency_table import LayerLatencyTable, LayerSpec
from compress._openvino import openvino_accuracy, quantize_nncf, read_openvino_metadata
from compress._pipeline import CompressionPipeline, StageRecord, deployed_summary
from compress._pruning import (
    LatencyTarget,
    MacsTarget,
    PruneResult,
    PruneStep,
    SideBySideCheck,
    prune,
)
from compress._settings import CompressSettings, DistillSettings, PruneSettings
from compress._structure import load_pruned, save_pruned
from compress._tensorrt import build_engine, tensorrt_unavailable_reason
from evaluators import (
    export_onnx,
    onnx_accuracy,
    preprocess,
    quantize_onnxruntime,
    read_metadata,
    set_metadata,
)

__all__ = [
    "CompressSettings", "CompressionPipeline", "CompressionStage", "DistillConfig",
    "DistillSettings", "DistillStep", "ImportanceCriterion", "LatencyAwarePruner",
    "LatencyTarget", "LayerLatencyTable", "LayerSpec", "MacsTarget", "ModelContext",
    "PruneResult", "PruneSettings", "PruneStep", "SideBySideCheck", "StageOutput", "StageRecord",
    "StageSkipped",
    "build_engine", "deployed_summary", "distill", "export_modelopt_onnx", "export_onnx", "get_importance", "kd_loss",
    "list_importances", "load_pruned", "onnx_accuracy", "openvino_accuracy", "preprocess",
    "prune", "quantize_modelopt", "quantize_nncf", "quantize_onnxruntime", "read_metadata",
    "read_openvino_metadata", "register_importance", "save_pruned", "set_metadata",
    "tensorrt_unavailable_reason",
]
