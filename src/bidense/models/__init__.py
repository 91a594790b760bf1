"""Model zoo: backbones, dense decoders, heads, the method table, registry and converter.

>>> from bidense.models import create_model, list_models
>>> model = create_model("upernet_convnext_atto", task="seg", num_classes=21, method="bidense")

``method`` is a name (:data:`METHODS`), resolved once by :func:`create_model` (or
:func:`binarize`) to its :class:`MethodSpec`, which is passed down to every architecture: one
architecture file serves every method and switches its block layout per method
(:mod:`bidense.models.methods`). :func:`binarize` converts an arbitrary float model. Tasks come
from :mod:`bidense.tasks`.
"""

from . import ding as _ding  # noqa: F401  (registers ding_resnet18, ding_resnet_tiny)
from . import zoo as _zoo  # noqa: F401  (registers the models)
from .converter import ConversionReport, binarize
from .convnext import CONVNEXT_PRESETS, ConvNeXt, convnext
from .deploy_options import configure_deployment
from .dpt import DPTDecoder
from .heads import DenseHead, DenseModel
from .methods import METHODS, MethodSpec, get_method
from .mobilenetv2 import MobileNetV2, mobilenet_v2_weights_path
from .registry import create_model, list_models, register_model
from .resnet import ResNet
from .upernet import UperNetDecoder
from .vit import VisionTransformer, softmax_aware_binarize

__all__ = [
    "configure_deployment",
    "CONVNEXT_PRESETS",
    "METHODS",
    "ConvNeXt",
    "ConversionReport",
    "DPTDecoder",
    "DenseHead",
    "DenseModel",
    "MethodSpec",
    "MobileNetV2",
    "ResNet",
    "UperNetDecoder",
    "VisionTransformer",
    "binarize",
    "convnext",
    "create_model",
    "get_method",
    "list_models",
    "mobilenet_v2_weights_path",
    "register_model",
    "softmax_aware_binarize",
]
