"""The networks of vfq: definitions, training on phantoms and real annotations, ONNX export."""
