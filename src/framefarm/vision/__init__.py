"""Image-side YOLO helpers: letterboxing, ONNX model wrapper, output decoding and drawing."""
