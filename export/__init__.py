"""Checkpoint to ONNX and TensorRT export (arrives with the export issue)."""
