"""Model packages: one signed file per model (weights + intrinsics + budget report)."""
