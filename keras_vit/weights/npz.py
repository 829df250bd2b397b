"""Reader for the original ViT JAX/Flax `.npz` checkpoints (google-research/vision_transformer, AugReg).

Layout of those files: `embedding/kernel` `(ph, pw, C, D)`, `cls` `(1, 1, D)`,
`Transformer/posembed_input/pos_embedding` `(1, N, D)`, per block
`Transformer/encoderblock_{i}/` with `LayerNorm_0`, `MultiHeadDotProductAttention_1`
(`query|key|value/kernel` `(D, heads, head_dim)`, `out/kernel` `(heads, head_dim, D)`),
`LayerNorm_2`, `MlpBlock_3/Dense_{0,1}`; then `Transformer/encoder_norm`,
optional `pre_logits` (Dense + tanh, ImageNet-21k releases) and `head`.
Flax Dense kernels are `(in, out)`. Checkpoints saved from a training state nest
everything under `opt/target/`; big_vision checkpoints under `params/`, with a
top-level `pos_embedding`, sublayers numbered 0/0/1/0 and optionally every block
stacked along a leading axis (`Transformer/encoderblock/...`). All of them are
converted here to timm keys and PyTorch layouts.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib

import numpy as np

from keras_vit.weights.errors import CheckpointError

_PREFIXES = ("", "opt/target/", "params/")


def read_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of an `.npz` file, never unpickling; each member's header is checked before its data is read.

    Raises:
        CheckpointError: a corrupt archive, a repeated or non-numeric array, or
            a shape larger than the bytes stored for it (naming file and array).
    """
    try:
        archive = zipfile.ZipFile(path)
    except ZIP_ERRORS as error:
        raise CheckpointError(
            f"'{path}' could not be read as an .npz archive ({type(error).__name__}: {error}); "
            "the file is truncated or corrupt. Download it again."
        ) from None
    arrays: dict[str, np.ndarray] = {}
    with archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if name in arrays:
                raise CheckpointError(f"'{path}' holds array {name!r} twice; the file is corrupt. Download it again.")
            try:
                _check_member(archive, info, os.path.getsize(path))
                with archive.open(info) as member:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
            except CheckpointError as error:
                raise CheckpointError(
                    f"'{path}': array {name!r} {error} The file is corrupt. Download it again."
                ) from None
            except ZIP_ERRORS as error:
                raise CheckpointError(
                    f"'{path}': array {name!r} could not be read ({type(error).__name__}: {error}); "
                    "the file is truncated or corrupt. Download it again."
                ) from None
    return arrays


# What `zipfile` and `numpy.lib.format` raise on damaged bytes (CRC, deflate, EOF, headers, odd methods).
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    struct.error,
)
_MAX_DEFLATE_RATIO = 1032  # deflate cannot expand data by more than this


def _check_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, archive_size: int) -> None:
    """Validates one `.npy` member's claimed sizes, dtype and shape before anything is allocated for it."""
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _MAX_DEFLATE_RATIO
    if info.compress_size > archive_size or info.file_size > ratio * info.compress_size + 1024:
        raise CheckpointError(
            f"claims {info.file_size} bytes from {info.compress_size} stored bytes in a {archive_size}-byte archive."
        )
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0)):
            raise CheckpointError(f"uses .npy format version {version}, which is not one of a numeric array.")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(member)
        header_size = member.tell()
    if dtype.hasobject or dtype.kind not in "biuf":
        raise CheckpointError(f"has dtype {dtype}, which is not a numeric array (keras_vit never unpickles).")
    needed = math.prod(shape) * dtype.itemsize
    if needed != info.file_size - header_size:
        raise CheckpointError(
            f"claims shape {tuple(shape)} of {dtype} ({needed} bytes) but holds {info.file_size - header_size} bytes."
        )


def npz_to_timm(arrays: dict[str, np.ndarray], path: str = "<npz>") -> dict[str, np.ndarray]:
    """Converts the arrays of an original-layout ViT `.npz` to a timm state dict.

    Keys outside the detected prefix (optimizer state) are ignored; keys inside
    it that this reader does not know are kept under their own names so the
    loader reports them as unexpected rather than dropping them silently.
    """
    prefix = next((p for p in _PREFIXES if f"{p}embedding/kernel" in arrays), None)
    if prefix is None:
        sample = ", ".join(sorted(arrays)[:8])
        raise CheckpointError(
            f"'{path}' is not a ViT .npz checkpoint: no 'embedding/kernel' under any of the "
            f"prefixes {list(_PREFIXES)}. First keys: {sample}"
        )
    w = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    used: set[str] = set()
    out: dict[str, np.ndarray] = {}

    taken: list[str] = []

    def take(name: str, index: int | None = None) -> np.ndarray:
        used.add(name)
        taken.append(name)
        value = w[name]  # a KeyError here means the tensor is absent; `put` skips it
        return value[index] if index is not None else value

    def put(key: str, make) -> None:
        """Sets `out[key] = make()` unless a source tensor is absent (the loader then reports `key` missing)."""
        first = len(taken)
        try:
            out[key] = make()
        except KeyError as error:  # optional parts (biases, pre-logits, head) may be absent; a block's weights not
            if key.startswith("blocks.") and not key.endswith(".bias"):
                raise CheckpointError(
                    f"'{path}' has no array {prefix}{error.args[0]} (needed for {key}); the file is incomplete or "
                    "corrupt. Download it again."
                ) from None
        except (ValueError, IndexError) as error:  # the arrays exist but have impossible shapes
            shapes = ", ".join(f"{n} {np.shape(w[n])}" for n in dict.fromkeys(taken[first:]) if n in w)
            raise CheckpointError(
                f"'{path}': array(s) {shapes} cannot form {key} ({error}); the file is corrupt or not a ViT "
                "checkpoint of the original layout."
            ) from None

    put("patch_embed.proj.weight", lambda: take("embedding/kernel").transpose(3, 2, 0, 1))
    put("patch_embed.proj.bias", lambda: take("embedding/bias"))
    put("cls_token", lambda: take("cls"))
    big_vision = "pos_embedding" in w
    pos_key = "pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding"
    put("pos_embed", lambda: take(pos_key) if w[pos_key].ndim == 3 else take(pos_key)[None])
    stacked = "Transformer/encoderblock/LayerNorm_0/scale" in w
    if stacked:
        scale = w["Transformer/encoderblock/LayerNorm_0/scale"]
        if scale.ndim != 2:
            raise CheckpointError(
                f"'{path}': array 'Transformer/encoderblock/LayerNorm_0/scale' of stacked blocks has shape "
                f"{scale.shape}, not (depth, width); the file is corrupt."
            )
        depth = scale.shape[0]
    else:
        depth = 0
        while any(k.startswith(f"Transformer/encoderblock_{depth}/") for k in w):
            depth += 1
    mha, mlp, ln2 = (0, 0, 1) if big_vision or stacked else (1, 3, 2)

    def qkv(attn: str, kind: str, idx):
        parts = [take(f"{attn}{n}/{kind}", idx) for n in ("query", "key", "value")]
        if len({p.shape for p in parts}) != 1:
            raise ValueError("query, key and value differ in shape")
        if kind == "bias":
            return np.concatenate([p.reshape(-1) for p in parts])
        return np.concatenate([p.reshape(p.shape[0], -1).T for p in parts])  # (D, H, hd) -> (H*hd, D) rows

    def flat_out(kernel: np.ndarray) -> np.ndarray:
        return kernel.reshape(-1, kernel.shape[-1]).T  # (H, hd, D) -> (D, H*hd)

    for i in range(depth):
        base, idx = ("Transformer/encoderblock/", i) if stacked else (f"Transformer/encoderblock_{i}/", None)
        attn, b = f"{base}MultiHeadDotProductAttention_{mha}/", f"blocks.{i}."
        for norm, source in (("norm1", "LayerNorm_0"), ("norm2", f"LayerNorm_{ln2}")):
            put(f"{b}{norm}.weight", lambda s=source, base=base, idx=idx: take(f"{base}{s}/scale", idx))
            put(f"{b}{norm}.bias", lambda s=source, base=base, idx=idx: take(f"{base}{s}/bias", idx))
        put(f"{b}attn.qkv.weight", lambda attn=attn, idx=idx: qkv(attn, "kernel", idx))
        put(f"{b}attn.qkv.bias", lambda attn=attn, idx=idx: qkv(attn, "bias", idx))
        put(f"{b}attn.proj.weight", lambda attn=attn, idx=idx: flat_out(take(f"{attn}out/kernel", idx)))
        put(f"{b}attn.proj.bias", lambda attn=attn, idx=idx: take(f"{attn}out/bias", idx))
        for r in (0, 1):
            put(
                f"{b}mlp.fc{r + 1}.weight",
                lambda r=r, base=base, idx=idx: take(f"{base}MlpBlock_{mlp}/Dense_{r}/kernel", idx).T,
            )
            put(
                f"{b}mlp.fc{r + 1}.bias",
                lambda r=r, base=base, idx=idx: take(f"{base}MlpBlock_{mlp}/Dense_{r}/bias", idx),
            )
    put("norm.weight", lambda: take("Transformer/encoder_norm/scale"))
    put("norm.bias", lambda: take("Transformer/encoder_norm/bias"))
    for ours, theirs in (("pre_logits.fc", "pre_logits"), ("head", "head")):
        put(f"{ours}.weight", lambda t=theirs: take(f"{t}/kernel").T)
        put(f"{ours}.bias", lambda t=theirs: take(f"{t}/bias"))
    for name in sorted(set(w) - used):  # unknown: let the loader report them
        out[f"{prefix}{name}"] = w[name]
    return out
