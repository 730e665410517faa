"""TF-MOT quantization-aware training for MobileNetV2MP (to come; see README Status)."""
