"""The semi-supervised parts of FocalMix: transforms with exact inverses, anchor-level
target prediction with sharpening (sec. 3.2), image- and object-level MixUp (sec. 3.3).

The training engine combines them; each works on plain tensors and callables, so this
package imports nothing from the detector.
"""

from focalmix_lib.ssl.mixup import (
    box_region,
    image_mixup,
    mix_with_partner,
    mixup_lambda,
    mixup_valid_mask,
    object_mixup,
)
from focalmix_lib.ssl.target_prediction import (
    averaged_view_predictions,
    averaged_view_probabilities,
    delta_inverse_matrix,
    predict_anchor_targets,
    sharpen,
    sharpen_logits,
)
from focalmix_lib.ssl.transforms import GROUP, IDENTITY, SpatialTransform, random_transforms

__all__ = [
    "GROUP",
    "IDENTITY",
    "SpatialTransform",
    "averaged_view_predictions",
    "averaged_view_probabilities",
    "box_region",
    "delta_inverse_matrix",
    "image_mixup",
    "mix_with_partner",
    "mixup_lambda",
    "mixup_valid_mask",
    "object_mixup",
    "predict_anchor_targets",
    "random_transforms",
    "sharpen",
    "sharpen_logits",
]
