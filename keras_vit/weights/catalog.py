"""Where public ViT/DeiT checkpoints live, and downloading them into the Keras cache.

Every URL here is one the publisher documents: the original ViT and AugReg
`.npz` files of google-research/vision_transformer (the `vit_models` bucket,
also listed in timm's `pretrained_cfg`s), timm's Hugging Face repositories
(`huggingface.co/timm/<name>`, which ship `model.safetensors`) and
`google/vit-base-patch16-224` on Hugging Face. No checksums are invented: the
publishers do not list SHA-256 digests, so `sha256` is empty unless one is
known; pass your own to `load_pretrained(..., sha256=...)` to pin a file. Without one, the
digest of the first download is recorded and every later use is checked against it.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
from typing import Any

from keras_vit.models.timm_beit_variants import BEIT_PRETRAINED
from keras_vit.weights.timm_eva_checkpoints import EVA_CHECKPOINTS

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)
_GCS = "https://storage.googleapis.com/vit_models"
_AUGREG = _GCS + "/augreg/{}-i21k-300ep-lr_0.001-aug_{}-wd_{}-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_{}-res_{}.npz"
_HF_TIMM = "https://huggingface.co/timm/{}/resolve/main/model.safetensors"


@dataclasses.dataclass(frozen=True)
class PretrainedCheckpoint:
    """One published checkpoint.

    Attributes:
        name: timm-style `model.tag` name.
        model: the keras_vit registry name to build it with.
        file_name: name of the file in the Keras cache.
        url: where the publisher serves it.
        format: "npz" or "safetensors".
        license: license of the weights.
        input_size: (height, width) it was trained or fine-tuned at.
        mean, std: input normalisation of [0, 1] pixels.
        num_classes: classes of its head (0: none).
        arch: extra `keras_vit.ViT` arguments the file needs beyond `model`'s
            (e.g. the ImageNet-21k head and pre-logits layer).
        source: who published it and where it is documented.
        sha256: digest, when the publisher gives one.
    """

    name: str
    model: str
    file_name: str
    url: str
    format: str
    license: str
    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    arch: dict = dataclasses.field(default_factory=dict)
    source: str = ""
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _orig(name, model, path, size, classes, **arch):
    return PretrainedCheckpoint(
        name=name,
        model=model,
        file_name=f"{name}.npz",
        url=f"{_GCS}/{path}",
        format="npz",
        license="Apache-2.0",
        input_size=(size, size),
        mean=HALF,
        std=HALF,
        num_classes=classes,
        arch=dict(num_classes=classes, **arch),
        source="Dosovitskiy et al. 2020; github.com/google-research/vision_transformer (README, model list)",
    )


def _augreg(name, model, short, aug, wd, lr, size):
    return PretrainedCheckpoint(
        name=name,
        model=model,
        file_name=f"{name}.npz",
        url=_AUGREG.format(short, aug, wd, lr, size),
        format="npz",
        license="Apache-2.0",
        input_size=(size, size),
        mean=HALF,
        std=HALF,
        num_classes=1000,
        source="Steiner et al. 2021 (AugReg), https://arxiv.org/abs/2106.10270; URL as in timm's pretrained_cfg",
    )


def _timm_hub(name, model, size, mean, std, classes, source):
    return PretrainedCheckpoint(
        name=name,
        model=model,
        file_name=f"{name}.safetensors",
        url=_HF_TIMM.format(name),
        format="safetensors",
        license="Apache-2.0",
        input_size=(size, size),
        mean=mean,
        std=std,
        num_classes=classes,
        arch={} if classes else {"num_classes": 0},
        source=f"{source}; https://huggingface.co/timm/{name}",
    )


_ENTRIES = [
    _orig(
        "vit_base_patch16_224.orig_in21k",
        "vit_base_patch16_224",
        "imagenet21k/ViT-B_16.npz",
        224,
        21843,
        representation_size=768,
    ),
    _orig(
        "vit_base_patch16_224.orig_in21k_ft_in1k",
        "vit_base_patch16_224",
        "imagenet21k%2Bimagenet2012/ViT-B_16-224.npz",
        224,
        1000,
    ),
    _orig(
        "vit_base_patch16_384.orig_in21k_ft_in1k",
        "vit_base_patch16_384",
        "imagenet21k%2Bimagenet2012/ViT-B_16.npz",
        384,
        1000,
    ),
    _augreg("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "vit_tiny_patch16_224", "Ti_16", "none", "0.03", "0.03", 224),
    _augreg("vit_tiny_patch16_384.augreg_in21k_ft_in1k", "vit_tiny_patch16_384", "Ti_16", "none", "0.03", "0.03", 384),
    _augreg(
        "vit_small_patch16_224.augreg_in21k_ft_in1k", "vit_small_patch16_224", "S_16", "light1", "0.03", "0.03", 224
    ),
    _augreg("vit_base_patch16_224.augreg_in21k_ft_in1k", "vit_base_patch16_224", "B_16", "medium1", "0.1", "0.01", 224),
    _augreg("vit_base_patch16_384.augreg_in21k_ft_in1k", "vit_base_patch16_384", "B_16", "medium1", "0.1", "0.01", 384),
    _timm_hub(
        "vit_base_patch16_224.augreg2_in21k_ft_in1k",
        "vit_base_patch16_224",
        224,
        HALF,
        HALF,
        1000,
        "AugReg, fine-tuned again by timm",
    ),
    _timm_hub(
        "deit_tiny_patch16_224.fb_in1k",
        "deit_tiny_patch16_224",
        224,
        IMAGENET_MEAN,
        IMAGENET_STD,
        1000,
        "Touvron et al. 2020 (DeiT), https://arxiv.org/abs/2012.12877",
    ),
    _timm_hub(
        "deit_tiny_distilled_patch16_224.fb_in1k",
        "deit_tiny_distilled_patch16_224",
        224,
        IMAGENET_MEAN,
        IMAGENET_STD,
        1000,
        "Touvron et al. 2020 (DeiT), https://arxiv.org/abs/2012.12877",
    ),
    _timm_hub(
        "vit_small_patch14_reg4_dinov2.lvd142m",
        "vit_small_patch14_reg4_dinov2",
        518,
        IMAGENET_MEAN,
        IMAGENET_STD,
        0,
        "Darcet et al. 2023 (DINOv2 with registers), https://arxiv.org/abs/2309.16588",
    ),
    # The MAE paper's released encoders (pretrained without labels on ImageNet-1k; no head), as timm publishes them.
    # Neither timm nor the paper lists a SHA-256 or file size for them.
    *(
        dataclasses.replace(
            _timm_hub(
                f"{model}.mae",
                model,
                224,
                IMAGENET_MEAN,
                IMAGENET_STD,
                0,
                "He et al. 2021 (MAE), https://arxiv.org/abs/2111.06377, github.com/facebookresearch/mae",
            ),
            license="CC-BY-NC-4.0",
        )
        for model in ("vit_base_patch16_224", "vit_large_patch16_224", "vit_huge_patch14_224")
    ),
    # timm's BEiT and BEiT v2 tags (generated table: input size, mean/std and classes as timm lists them).
    *(
        dataclasses.replace(
            _timm_hub(t["name"], t["model"], t["input_size"][0], t["mean"], t["std"], t["num_classes"], "BEiT"),
            arch={} if t["num_classes"] == 1000 else {"num_classes": t["num_classes"]},
        )
        for t in BEIT_PRETRAINED
    ),
    PretrainedCheckpoint(
        name="google/vit-base-patch16-224",
        model="vit_base_patch16_224",
        file_name="google--vit-base-patch16-224.safetensors",
        url="https://huggingface.co/google/vit-base-patch16-224/resolve/main/model.safetensors",
        format="safetensors",
        license="Apache-2.0",
        input_size=(224, 224),
        mean=HALF,
        std=HALF,
        num_classes=1000,
        arch={"layer_norm_epsilon": 1e-12},
        source="Hugging Face transformers ViTForImageClassification; "
        "https://huggingface.co/google/vit-base-patch16-224",
    ),
]
_ENTRIES += [PretrainedCheckpoint(**row) for row in EVA_CHECKPOINTS]  # timm's EVA-family tags (generated)


def _timm_tags() -> list[PretrainedCheckpoint]:
    """timm's tags of the vision_transformer.py / deit.py names (keras_vit/weights/timm_vit_pretrained.py).

    A tag catalogued above keeps its entry (the original `.npz` files).
    """
    from keras_vit.weights.timm_vit_pretrained import TIMM_VIT_PRETRAINED

    taken = {entry.name for entry in _ENTRIES}
    return [
        PretrainedCheckpoint(
            name=name,
            model=tag["model"],
            file_name=f"{name}.safetensors",
            url=f"https://huggingface.co/{tag['hf_hub_id']}/resolve/main/model.safetensors",
            format="safetensors",
            license=tag["license"],
            input_size=tag["input_size"],
            mean=tag["mean"],
            std=tag["std"],
            num_classes=tag["num_classes"],
            arch=tag["arch"],
            source=f"timm's pretrained_cfg; https://huggingface.co/{tag['hf_hub_id']}",
        )
        for name, tag in TIMM_VIT_PRETRAINED.items()
        if name not in taken
    ]


CHECKPOINTS: dict[str, PretrainedCheckpoint] = {entry.name: entry for entry in _ENTRIES + _timm_tags()}


def list_checkpoints(pattern: str = "*") -> list[str]:
    """Sorted names of catalogued checkpoints matching an fnmatch `pattern`."""
    return sorted(n for n in CHECKPOINTS if fnmatch.fnmatchcase(n, pattern))


def checkpoint_info(name: str) -> PretrainedCheckpoint:
    """The catalogue entry `name` (see `list_checkpoints()`)."""
    if name not in CHECKPOINTS:
        close = difflib.get_close_matches(str(name), CHECKPOINTS, n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown checkpoint {name!r}.{hint} See keras_vit.weights.list_checkpoints() for all "
            f"{len(CHECKPOINTS)}, e.g. list_checkpoints('vit_base_patch16_*')."
        )
    return CHECKPOINTS[name]


def download_checkpoint(name: str, cache_dir: str | None = None) -> str:
    """Downloads a catalogued checkpoint once into the Keras cache (`~/.keras/keras_vit/`) and returns its path.

    The download is atomic and checked on every call (`checksum.fetch_verified`):
    against the entry's `sha256` when the publisher gives one, else against the
    SHA-256 of the first download, recorded beside the file as `<file>.sha256`.

    Args:
        name: a name from `list_checkpoints()`.
        cache_dir: optional cache root instead of `$KERAS_VIT_CACHE` or, without
            it, the Keras home (`$KERAS_HOME` or `~/.keras`).
    """
    from keras_vit.weights.checksum import fetch_verified

    entry = checkpoint_info(name)
    root = cache_dir or os.environ.get("KERAS_VIT_CACHE") or os.environ.get("KERAS_HOME") or "~/.keras"
    folder = os.path.join(os.path.expanduser(root), "keras_vit")
    os.makedirs(folder, exist_ok=True)
    return fetch_verified(entry.url, os.path.join(folder, entry.file_name), entry.sha256)
