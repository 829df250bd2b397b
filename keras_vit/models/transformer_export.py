"""Exports a `Transformer` to a SavedModel with a `generate` signature (decoding inside the graph).

TensorFlow-specific by design (it writes a SavedModel); the decoding loop is
the model's own `generate`, so the exported graph decodes exactly like eager
`model.generate` with the same options.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import tensorflow as tf

from keras_vit.models.transformer import Transformer
from keras_vit.validation import check_positive_int


def export_generate(
    model: Transformer,
    path: str,
    max_length: int,
    beam_size: int = 1,
    length_penalty: float = 0.6,
    use_cache: bool = True,
) -> str:
    """Writes `model` as a SavedModel whose `generate` signature decodes source token ids.

    The signature takes `encoder_tokens` (int32 `(batch, source_length)`, any
    batch and length; padding derived from `pad_token_id`) and returns `tokens`
    (int32 `(batch, max_length)`) and `scores` (float32 `(batch,)`). It is also
    the `serving_default` signature, so TF Serving's predict API calls it. The
    directory is written under a temporary name and renamed into place.

    Args:
        model: an encoder-decoder `Transformer`.
        path: target directory (replaced if it exists).
        max_length: int. Most tokens generated per sequence (fixed in the graph).
        beam_size: int. 1 for greedy search.
        length_penalty: float. GNMT alpha for beam search.
        use_cache: bool. Incremental decoding with the key/value cache.

    Returns:
        The path written.
    """
    if not isinstance(model, Transformer):
        raise ValueError(f"export_generate needs a keras_vit.Transformer. Received: {type(model).__name__}")
    check_positive_int(max_length, "max_length")
    # Validates the options once, eagerly, so a bad value fails here rather than while tracing.
    model.check_generate_options(None, max_length, beam_size, length_penalty)

    module = tf.Module()
    module.model = model

    @tf.function(input_signature=[tf.TensorSpec((None, None), tf.int32, name="encoder_tokens")])
    def generate(encoder_tokens):
        outputs = model.generate(
            encoder_tokens,
            max_length=max_length,
            beam_size=beam_size,
            length_penalty=length_penalty,
            use_cache=use_cache,
        )
        return {"tokens": outputs["tokens"], "scores": outputs["scores"]}

    module.generate = generate
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        tf.saved_model.save(module, staging, signatures={"generate": generate, "serving_default": generate})
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=".replaced-", dir=parent)
            os.replace(path, os.path.join(old, "model"))
            os.replace(staging, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)
    return path
