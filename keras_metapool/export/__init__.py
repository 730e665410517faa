"""SavedModel, TFLite and Edge TPU export (to come; see README Status)."""
