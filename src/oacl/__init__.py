"""Object-aware contrastive learning for debiased scene representation (Mo et al., NeurIPS 2021)."""

__version__ = "0.1.0"
