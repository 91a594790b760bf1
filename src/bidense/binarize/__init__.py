"""Activation and weight binarizers, registered by name (Larq-style tiny API).

>>> from bidense.binarize import get_activation_binarizer, list_binarizers
>>> list_binarizers("activation")
['adabin', 'approx_sign', 'bisrnet', 'dab', 'rsign', 'sign', 'xnor']
"""

from . import activation as _activation  # noqa: F401  (registers the activation binarizers)
from . import weight as _weight  # noqa: F401  (registers the weight binarizers)
from .activation import (
    DAB,
    AdaBinActivation,
    ApproxSignActivation,
    BiSRActivation,
    RSign,
    SignActivation,
    XNORActivation,
)
from .base import (
    ActivationBinarizer,
    IdentityActivation,
    IdentityWeight,
    WeightBinarizer,
    bits_of,
    clip_latent_weights,
    get_activation_binarizer,
    get_weight_binarizer,
    list_binarizers,
    register_binarizer,
    set_training_progress,
)
from .functional import (
    approx_sign,
    dab,
    ede_schedule,
    ede_sign,
    mean_abs_sign,
    scaled_sign_clip_ste,
    shifted_approx_sign,
    sign_clip_ste,
    tanh_sign,
)
from .weight import (
    AdaBinWeight,
    CenteredMeanAbsWeight,
    LearnedScaleWeight,
    MagnitudeAwareWeight,
    MeanAbsWeight,
    SignWeight,
)

__all__ = [
    "DAB",
    "ActivationBinarizer",
    "AdaBinActivation",
    "AdaBinWeight",
    "ApproxSignActivation",
    "BiSRActivation",
    "CenteredMeanAbsWeight",
    "IdentityActivation",
    "IdentityWeight",
    "LearnedScaleWeight",
    "MagnitudeAwareWeight",
    "MeanAbsWeight",
    "RSign",
    "SignActivation",
    "SignWeight",
    "WeightBinarizer",
    "XNORActivation",
    "approx_sign",
    "bits_of",
    "clip_latent_weights",
    "dab",
    "ede_schedule",
    "ede_sign",
    "get_activation_binarizer",
    "get_weight_binarizer",
    "list_binarizers",
    "mean_abs_sign",
    "register_binarizer",
    "scaled_sign_clip_ste",
    "set_training_progress",
    "shifted_approx_sign",
    "sign_clip_ste",
    "tanh_sign",
]
