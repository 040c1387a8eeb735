"""After training: evaluate a checkpoint on a split (metrics, per-class table, confusion
figure), predict the car model in photos, and export a checkpoint to ONNX or TorchScript with
its preprocessing in the file's metadata."""
