"""Deployment: ONNX export (`birnn.export.onnx`, needs PyTorch) and the ONNX Runtime runner
(`birnn.export.runtime`, needs neither PyTorch's model code nor Lightning). Import the one you
need; this package imports neither."""
