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

import contextlib
import zipfile
import zlib

import numpy as np

from keras_vit.weights.errors import CheckpointError

_PREFIXES = ("", "opt/target/", "params/")


def read_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of an `.npz` file, never unpickling (object arrays are refused)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: np.asarray(archive[name]) for name in archive.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
        raise CheckpointError(
            f"'{path}' could not be read as an .npz archive ({type(error).__name__}: {error}); "
            "the file is truncated or corrupt. Download it again."
        ) from None


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

    def take(name: str, index: int | None = None) -> np.ndarray:
        used.add(name)
        value = w[name]  # a KeyError here means the tensor is absent; `put` skips it
        return value[index] if index is not None else value

    def put(key: str, make) -> None:
        """Sets `out[key] = make()` unless a source tensor is absent (the loader then reports `key` missing).

        `make` runs at once, so the loop variables the lambdas below bind as defaults are the current ones.
        """
        with contextlib.suppress(KeyError):
            out[key] = make()

    put("patch_embed.proj.weight", lambda: take("embedding/kernel").transpose(3, 2, 0, 1))
    put("patch_embed.proj.bias", lambda: take("embedding/bias"))
    put("cls_token", lambda: take("cls"))
    big_vision = "pos_embedding" in w
    pos_key = "pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding"
    put("pos_embed", lambda: take(pos_key) if w[pos_key].ndim == 3 else take(pos_key)[None])
    stacked = "Transformer/encoderblock/LayerNorm_0/scale" in w
    if stacked:
        depth = w["Transformer/encoderblock/LayerNorm_0/scale"].shape[0]
    else:
        depth = 0
        while any(k.startswith(f"Transformer/encoderblock_{depth}/") for k in w):
            depth += 1
    mha, mlp, ln2 = (0, 0, 1) if big_vision or stacked else (1, 3, 2)

    def qkv(attn: str, kind: str, idx):
        parts = [take(f"{attn}{n}/{kind}", idx) for n in ("query", "key", "value")]
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
