"""Which format a checkpoint file is in, and reading any supported one into timm keys.

Detection looks at the bytes, not only the extension: safetensors (8-byte
header length then JSON), `.npz` (a zip of `.npy` members), Keras
`.weights.h5` (HDF5 signature). PyTorch pickles (`.pth`, `.pt`, `.bin`,
`.ckpt`: a zip holding `data.pkl`, or a raw pickle stream) are refused, because
unpickling a file runs code from it.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np

from keras_vit.weights import hf, npz, timm_keys
from keras_vit.weights.errors import CheckpointError
from keras_vit.weights.safetensors_io import read_safetensors

SAFETENSORS, NPZ, KERAS_H5 = "safetensors", "npz", "keras_h5"
_PICKLE_EXTENSIONS = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".tar")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def pickle_refusal(path: str) -> CheckpointError:
    """The error for a PyTorch pickle, with the recipe to convert it to safetensors."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return CheckpointError(
        f"'{path}' is a PyTorch pickle checkpoint. keras_vit never unpickles files: loading a pickle can run "
        "arbitrary code from it. Convert it once to safetensors with PyTorch, in an environment you trust:\n"
        '    python -c "import torch; from safetensors.torch import save_file; '
        f"sd = torch.load('{path}', map_location='cpu', weights_only=True); "
        "sd = sd.get('model', sd.get('state_dict', sd)); "
        f"save_file({{k: v.contiguous() for k, v in sd.items()}}, '{stem}.safetensors')\"\n"
        f"then load '{stem}.safetensors'. Most timm and Hugging Face repositories also publish a "
        "model.safetensors next to the .bin/.pth file."
    )


def detect_format(path: str) -> str:
    """Returns "safetensors", "npz" or "keras_h5" for a checkpoint file.

    Raises:
        CheckpointError: missing, empty, pickled or unrecognised file.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint file '{path}' does not exist (or is not a file). Check the path.")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"Checkpoint file '{path}' is empty; the download or conversion did not finish.")
    with open(path, "rb") as f:
        head = f.read(16)
    lower = path.lower()
    if head.startswith(_HDF5_SIGNATURE):
        return KERAS_H5
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except npz.ZIP_ERRORS:
            if lower.endswith(_PICKLE_EXTENSIONS):
                raise pickle_refusal(path) from None
            raise CheckpointError(
                f"'{path}' looks like a zip archive (.npz) but its directory cannot be read; "
                "the file is truncated or corrupt. Download it again."
            ) from None
        if any(n.endswith("data.pkl") for n in names):
            raise pickle_refusal(path)
        if names and all(n.endswith(".npy") for n in names):
            return NPZ
        raise CheckpointError(f"'{path}' is a zip archive but not an .npz of arrays (members: {names[:5]}).")
    declared = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    if head[8:9] == b"{" and 8 + declared <= size:  # checked first: the length's low byte can be 0x80
        return SAFETENSORS
    if head[:1] == b"\x80" or lower.endswith(_PICKLE_EXTENSIONS):
        raise pickle_refusal(path)
    if lower.endswith(".safetensors"):
        return SAFETENSORS  # let the reader explain what is wrong with the header
    if lower.endswith(".npz"):
        raise CheckpointError(
            f"'{path}' has the .npz extension but is not a zip archive; it is corrupt. Download it again."
        )
    raise CheckpointError(
        f"Cannot tell the format of '{path}' (first bytes {head[:8]!r}). Supported: .safetensors "
        "(timm or Hugging Face ViT), .npz (original JAX ViT/AugReg), .weights.h5 (keras_vit)."
    )


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint read into timm keys and PyTorch layouts.

    Attributes:
        state: timm key -> array.
        format: "safetensors" or "npz".
        flavor: "timm", "hf" or "jax": whose names the file used.
        metadata: safetensors header metadata, if any.
    """

    state: dict[str, np.ndarray]
    format: str
    flavor: str
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)


def read_checkpoint(path: str) -> Checkpoint:
    """Reads a `.safetensors` (timm or Hugging Face) or `.npz` (original ViT) file into timm keys.

    Args:
        path: str. The checkpoint file.

    Returns:
        A `Checkpoint`.

    Raises:
        CheckpointError: unreadable, corrupt, pickled, or a Keras `.weights.h5`
            (which loads through `load_pretrained`, needing the model).
    """
    kind = detect_format(path)
    if kind == KERAS_H5:
        raise CheckpointError(
            f"'{path}' is a Keras weights file; load it with `model.load_pretrained(path)` "
            "(it needs a model of the same architecture)."
        )
    if kind == NPZ:
        return Checkpoint(npz.npz_to_timm(npz.read_npz(path), path), NPZ, "jax")
    tensors, metadata = read_safetensors(path)
    tensors = timm_keys.strip_wrapper_prefix(tensors)
    if hf.is_hf_state(tensors):
        return Checkpoint(hf.hf_to_timm(tensors, path), SAFETENSORS, "hf", metadata)
    return Checkpoint(tensors, SAFETENSORS, "timm", metadata)
