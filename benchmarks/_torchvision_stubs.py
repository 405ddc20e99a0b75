"""Stand-ins for the three torchvision helpers that MONAI's 3D RetinaNet imports.

The kit has no torchvision (and must not depend on it); the MONAI side of
``bench_training.py`` needs only:

* ``torchvision.models._utils.IntermediateLayerGetter``: the backbone's children up to
  the last requested one, returning the requested outputs by their new names;
* ``torchvision.models.detection.backbone_utils._validate_trainable_layers``: with an
  untrained backbone every layer trains, so the requested value is returned (5 when
  none is given, as torchvision does for ``pretrained=False``);
* ``torchvision.models.detection._utils.Matcher`` and ``BalancedPositiveNegativeSampler``:
  used by MONAI only in ``isinstance`` checks; the benchmark sets MONAI's own ATSS
  matcher and hard-negative sampler, so empty classes suffice.

Call :func:`install` before the first ``import monai.apps.detection``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from collections import OrderedDict

from torch import Tensor, nn


class IntermediateLayerGetter(nn.ModuleDict):
    """The children of ``model`` up to the last name in ``return_layers``, run in order.

    ``forward(x)`` returns an ``OrderedDict`` mapping ``return_layers[name]`` to the output
    of child ``name``. Children after the last requested one are dropped (they would
    never run), as in torchvision.
    """

    def __init__(self, model: nn.Module, return_layers: dict[str, str]):
        wanted = dict(return_layers)
        missing = set(wanted) - {name for name, _ in model.named_children()}
        if missing:
            raise ValueError(f"return_layers {sorted(missing)} are not children of the model")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        remaining = set(wanted)
        for name, module in model.named_children():
            layers[name] = module
            remaining.discard(name)
            if not remaining:
                break
        super().__init__(layers)
        self.return_layers = wanted

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        out: OrderedDict[str, Tensor] = OrderedDict()
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


def _validate_trainable_layers(is_trained: bool, trainable_backbone_layers: int | None, max_value: int,
                               default_value: int) -> int:
    """All layers train when the backbone is untrained; otherwise the given (or default) count."""
    if not is_trained:
        return max_value if trainable_backbone_layers is None else trainable_backbone_layers
    return default_value if trainable_backbone_layers is None else trainable_backbone_layers


class Matcher:
    """Placeholder: MONAI checks ``isinstance(matcher, Matcher)``; the benchmark uses ATSS."""


class BalancedPositiveNegativeSampler:
    """Placeholder: MONAI checks ``isinstance(sampler, ...)``; the benchmark uses HardNegativeSampler."""


def _module(name: str, **attributes: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__path__ = []  # a package, so that submodules resolve from sys.modules
    module.__file__ = __file__  # MONAI's optional_import refuses namespace packages (no __file__)
    module.__dict__.update(attributes)
    return module


def install() -> None:
    """Insert the fake ``torchvision`` package into ``sys.modules`` (no-op where a real one is installed)."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return
    modules = {
        "torchvision": _module("torchvision", __version__="0.0.0+kit-stub"),
        "torchvision.models": _module("torchvision.models"),
        "torchvision.models._utils": _module("torchvision.models._utils",
                                             IntermediateLayerGetter=IntermediateLayerGetter),
        "torchvision.models.detection": _module("torchvision.models.detection"),
        "torchvision.models.detection._utils": _module(
            "torchvision.models.detection._utils", Matcher=Matcher,
            BalancedPositiveNegativeSampler=BalancedPositiveNegativeSampler),
        "torchvision.models.detection.backbone_utils": _module(
            "torchvision.models.detection.backbone_utils", _validate_trainable_layers=_validate_trainable_layers),
    }
    for name, module in modules.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, module)
        sys.modules[name] = module
