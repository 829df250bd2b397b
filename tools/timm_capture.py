"""What timm builds for each registered name: model class, constructor arguments and default pretrained config.

timm's registration functions hold each variant's hyper-parameters as a dict
handed to `build_model_with_cfg`. Intercepting that call, instead of building
the model, reads them for every name in a module in a second, without weights
or memory. The variant-table generators of `tools/` translate the result into
keras_vit architecture arguments. Needs timm (the `test` extra); never imported
by the package.

    python -m tools.timm_capture vision_transformer   # prints one line per name
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from typing import Any

MODULES = ("vision_transformer", "deit", "eva", "beit")


@dataclasses.dataclass(frozen=True)
class TimmVariant:
    """One timm registration: `model_class(**kwargs)` is what `timm.create_model(name)` builds."""

    name: str
    module: str
    model_class: str
    kwargs: dict[str, Any]
    pretrained: dict[str, Any]  # the default tag's input_size, mean, std, crop_pct, interpolation, num_classes


class _Captured(Exception):
    def __init__(self, model_class, kwargs):
        super().__init__(model_class.__name__)
        self.model_class, self.kwargs = model_class, kwargs


def _intercept(model_class, variant, pretrained=False, **kwargs):
    raise _Captured(model_class, kwargs)


def capture(module: str) -> list[TimmVariant]:
    """Every non-test name timm registers in `timm.models.<module>`, in timm's order."""
    import timm
    from timm.models import _registry

    timm_module = importlib.import_module(f"timm.models.{module}")
    original = timm_module.build_model_with_cfg
    timm_module.build_model_with_cfg = _intercept
    variants = []
    try:
        for name in timm.list_models(module=module):
            if name.startswith("test_"):
                continue
            try:
                _registry.model_entrypoint(name)(pretrained=False)
            except _Captured as captured:
                cfg = _registry.get_pretrained_cfg(name)
                pretrained = {
                    "input_size": tuple(cfg.input_size[1:]),
                    "mean": tuple(cfg.mean),
                    "std": tuple(cfg.std),
                    "crop_pct": cfg.crop_pct,
                    "interpolation": cfg.interpolation,
                    "num_classes": cfg.num_classes,
                    "tag": cfg.tag,
                    "license": cfg.license,
                }
                kwargs = {k: v for k, v in captured.kwargs.items() if k not in ("pretrained_filter_fn", "feature_cfg")}
                variants.append(TimmVariant(name, module, captured.model_class.__name__, kwargs, pretrained))
            else:
                raise RuntimeError(f"timm's {name!r} did not go through build_model_with_cfg")
    finally:
        timm_module.build_model_with_cfg = original
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=MODULES, choices=MODULES)
    for module in parser.parse_args().modules:
        for variant in capture(module):
            print(variant.name, variant.model_class, variant.kwargs, variant.pretrained)


if __name__ == "__main__":
    main()
