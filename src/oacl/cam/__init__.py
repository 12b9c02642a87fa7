"""ContraCAM: self-supervised object localization from a contrastive model, and its post-processing."""

from oacl.cam.contracam import (
    CamModel,
    CamResult,
    ContraCAMSettings,
    classifier_cam,
    contracam,
    contracam_prepared,
    contrastive_score,
    prepare_cam_model,
    run_contracam,
)
from oacl.cam.postprocess import PostprocessOptions, refine_batch, refine_one

__all__ = [
    "CamModel",
    "CamResult",
    "ContraCAMSettings",
    "PostprocessOptions",
    "classifier_cam",
    "contracam",
    "contracam_prepared",
    "contrastive_score",
    "prepare_cam_model",
    "refine_batch",
    "refine_one",
    "run_contracam",
]
