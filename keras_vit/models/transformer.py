"""The sequence Transformer (Vaswani et al. 2017) as a functional `keras.Model`, with fast decoding.

Encoder-decoder by default, encoder-only with `num_decoder_layers=0`. The
training graph takes a dict of token ids (and optional padding masks) and
returns float32 logits; `generate()` runs greedy or beam search over the same
layers with a key/value cache, one decoder step per new token.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_vit.layers.decoder import TransformerDecoderBlock
from keras_vit.layers.normalization import LayerNorm
from keras_vit.layers.position import SinusoidalPositionEncoding
from keras_vit.layers.relative_position import RelativePositionBias
from keras_vit.layers.sequence_embeddings import LearnedPositionEncoding, TokenEmbedding
from keras_vit.layers.sequence_encoder import SequenceEncoderBlock
from keras_vit.models import decoding
from keras_vit.models._arch import check_arch_names, from_variant_config
from keras_vit.validation import check_choice, check_int, check_rate

POSITION_ENCODINGS = ("sinusoidal", "learned", "relative", "rotary")
ABSOLUTE_ENCODINGS = ("sinusoidal", "learned")
ACTIVATIONS = ("relu", "gelu")


@dataclasses.dataclass
class TransformerConfig:
    """Architecture arguments of `Transformer`; see `Transformer` for their meaning."""

    vocab_size: int = 37000
    target_vocab_size: int | None = None
    share_embeddings: bool = False
    tie_output: bool = True
    hidden_dim: int = 512
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    num_heads: int = 8
    mlp_dim: int = 2048
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.0
    activation: str = "relu"
    norm_first: bool = False
    final_norm: bool | None = None
    position_encoding: str = "sinusoidal"
    max_length: int = 1024
    relative_num_buckets: int = 32
    relative_max_distance: int = 128
    scale_embeddings: bool = True
    layer_norm_epsilon: float = 1e-5
    pad_token_id: int = 0
    start_token_id: int = 1
    end_token_id: int = 2

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raises `ValueError` naming the bad value and the fix."""
        for field in (
            "vocab_size",
            "hidden_dim",
            "num_encoder_layers",
            "num_heads",
            "mlp_dim",
            "max_length",
            "relative_num_buckets",
            "relative_max_distance",
        ):
            check_int(getattr(self, field), field, minimum=1)
        check_int(self.num_decoder_layers, "num_decoder_layers", minimum=0)
        if self.target_vocab_size is not None:
            check_int(self.target_vocab_size, "target_vocab_size", minimum=1)
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"`hidden_dim` ({self.hidden_dim}) must be divisible by `num_heads` ({self.num_heads}). "
                f"Received: hidden_dim={self.hidden_dim}, num_heads={self.num_heads}"
            )
        if self.position_encoding == "sinusoidal" and self.hidden_dim % 2:
            raise ValueError(f"Sinusoidal encodings need an even `hidden_dim`. Received: hidden_dim={self.hidden_dim}")
        if self.position_encoding == "rotary" and (self.hidden_dim // self.num_heads) % 2:
            raise ValueError(
                "Rotary embeddings need an even head dimension (hidden_dim / num_heads). "
                f"Received: hidden_dim={self.hidden_dim}, num_heads={self.num_heads}"
            )
        if self.share_embeddings and self.target_vocab_size not in (None, self.vocab_size):
            raise ValueError(
                "Shared source/target embeddings need one vocabulary, but the sizes differ. Received: "
                f"vocab_size={self.vocab_size}, target_vocab_size={self.target_vocab_size}. Use one vocabulary "
                "for both sides or set share_embeddings=False."
            )
        for field in ("dropout_rate", "attention_dropout_rate"):
            check_rate(getattr(self, field), field)
        check_choice(self.activation, "activation", ACTIVATIONS)
        if self.position_encoding not in POSITION_ENCODINGS:
            raise ValueError(
                f"`position_encoding` must be one of {POSITION_ENCODINGS}. "
                f"Received: position_encoding={self.position_encoding!r}"
            )
        for field in ("pad_token_id", "start_token_id", "end_token_id"):
            value = getattr(self, field)
            check_int(value, field, minimum=0)
            if value >= self.output_vocab_size:
                raise ValueError(
                    f"`{field}` must be a token id below the target vocabulary size {self.output_vocab_size}. "
                    f"Received: {field}={value}"
                )

    @property
    def encoder_only(self) -> bool:
        return self.num_decoder_layers == 0

    @property
    def output_vocab_size(self) -> int:
        """Size of the predicted vocabulary: the target's, or the source's for encoder-only models."""
        if self.encoder_only:
            return self.vocab_size
        return self.target_vocab_size or self.vocab_size

    @property
    def use_final_norm(self) -> bool:
        return self.norm_first if self.final_norm is None else bool(self.final_norm)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def transformer_param_count(config: TransformerConfig) -> int:
    """Exact parameter count of a `Transformer` built from `config`, without building it."""
    c, d = config, config.hidden_dim
    attention = 4 * (d * d + d)
    mlp = d * c.mlp_dim + c.mlp_dim + c.mlp_dim * d + d
    count = c.num_encoder_layers * (attention + mlp + 2 * 2 * d)
    count += c.num_decoder_layers * (2 * attention + mlp + 3 * 2 * d)
    count += c.vocab_size * d
    if not c.encoder_only and not c.share_embeddings:
        count += c.output_vocab_size * d
    if not c.tie_output:
        count += d * c.output_vocab_size + c.output_vocab_size
    if c.use_final_norm:
        count += 2 * d * (1 if c.encoder_only else 2)
    if c.position_encoding == "learned":
        count += c.max_length * d * (1 if c.encoder_only else 2)
    if c.position_encoding == "relative":
        count += c.relative_num_buckets * c.num_heads * (1 if c.encoder_only else 2)
    return count


@keras.saving.register_keras_serializable(package="keras_vit")
class Transformer(keras.Model):
    """The Transformer of Vaswani et al. 2017, "Attention Is All You Need" (https://arxiv.org/abs/1706.03762).

    Built by name or from explicit arguments (explicit ones override the variant's):

        keras_vit.Transformer("transformer_base", vocab_size=32000, share_embeddings=True)
        keras_vit.Transformer(vocab_size=13, hidden_dim=64, num_encoder_layers=2,
                              num_decoder_layers=2, num_heads=4, mlp_dim=128)

    Args:
        variant: str or None. A registered name (`keras_vit.list_models("transformer*")`).
        vocab_size: int. Source vocabulary size (the only one when shared). Defaults to 37000
            (the paper's shared English-German BPE vocabulary).
        target_vocab_size: int or None. Target vocabulary size; None means `vocab_size`.
        share_embeddings: bool. One embedding table for source and target (needs equal sizes).
        tie_output: bool. Output logits use the target embedding table (paper, section 3.4).
        hidden_dim: int. Model width `d_model`. Defaults to 512.
        num_encoder_layers: int. Defaults to 6.
        num_decoder_layers: int. Defaults to 6; 0 gives the encoder-only model.
        num_heads: int. Defaults to 8.
        mlp_dim: int. Feed-forward inner width `d_ff`. Defaults to 2048.
        dropout_rate: float. Residual and embedding dropout `P_drop`. Defaults to 0.1.
        attention_dropout_rate: float. Dropout on attention weights. Defaults to 0.
        activation: "relu" (paper) or "gelu".
        norm_first: bool. Pre-norm blocks instead of the paper's post-norm. Defaults to False.
        final_norm: bool or None. LayerNorm after each stack; None means `norm_first`
            (`torch.nn.Transformer` always adds it: set True to match it).
        position_encoding: "sinusoidal" (fixed, any length), "learned" (at most
            `max_length` positions), "relative" (T5 bucketed bias, any length) or
            "rotary" (RoPE in every self-attention, any length).
        max_length: int. Positions in learned tables. Defaults to 1024.
        relative_num_buckets, relative_max_distance: int. T5 relative-bias buckets (32, 128).
        scale_embeddings: bool. Multiply embeddings by `sqrt(hidden_dim)`. Defaults to True.
        layer_norm_epsilon: float. Defaults to 1e-5.
        pad_token_id, start_token_id, end_token_id: int. Special target ids (0, 1, 2);
            padding masks are derived from `pad_token_id` when not given.
        dtype: dtype policy of every layer; logits stay float32.

    Call arguments:
        inputs: dict with "encoder_tokens" `(batch, source_length)` int ids and
            (encoder-decoder) "decoder_tokens" `(batch, target_length)` (the target
            shifted right behind the start token), and optionally boolean
            "encoder_padding_mask" / "decoder_padding_mask" of the same shapes
            (True for real tokens). Encoder-only models also accept the ids alone.

    Returns:
        Float32 logits `(batch, target_length, target_vocab_size)` (encoder-only:
        `(batch, source_length, vocab_size)`).

    Examples:
        >>> model = keras_vit.Transformer("transformer_tiny")
        >>> out = model.generate(source_ids, max_length=12, beam_size=4)  # {"tokens", "scores"}
    """

    def __init__(self, variant: str | None = None, /, *, name: str | None = None, dtype=None, **arch):
        if variant is not None:
            from keras_vit.models.registry import model_spec

            spec = model_spec(variant)
            if spec.family != "transformer":
                raise ValueError(
                    f"{variant!r} is a {spec.family!r} model, not a Transformer variant. "
                    f"See keras_vit.list_models('transformer*')."
                )
            arch = dict(spec.arch, **arch)
        check_arch_names(arch, TransformerConfig, "Transformer")
        config = TransformerConfig(**arch)
        inputs, outputs = _build_graph(config, dtype)
        super().__init__(inputs=inputs, outputs=outputs, name=name or variant or "transformer", dtype=dtype)
        self.variant = variant
        self.config = config
        self.input_spec = None  # `prepare_inputs` gives errors that name the fix

    def get_config(self) -> dict[str, Any]:
        return dict(variant=self.variant, name=self.name, **self.config.to_dict())

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return from_variant_config(cls, config)

    def call(self, inputs, training=None, mask=None):
        return super().call(self.prepare_inputs(inputs), training=training, mask=mask)

    # ---- inputs ------------------------------------------------------------------------------
    def prepare_inputs(self, inputs) -> dict:
        """Validates the inputs and fills in padding masks derived from `pad_token_id`.

        Raises:
            ValueError: unknown or missing keys, token ids that are not integers
                of rank 2 or (when their values are known) outside the
                vocabulary, or masks whose shape differs from their tokens'.
            tf.errors.InvalidArgumentError: at run time, for traced ids (in a
                `tf.function`, `fit`, a SavedModel) outside the vocabulary, on
                the TensorFlow backend without XLA (XLA drops the assertion).
        """
        return prepare_inputs(inputs, self.config)

    # ---- encoder and decoder as functions (used by generate) ---------------------------------
    def _target_embedding(self) -> TokenEmbedding:
        return self.get_layer("token_embedding" if self.config.share_embeddings else "target_embedding")

    def encode(self, encoder_tokens, encoder_padding_mask=None, training: bool = False):
        """Runs the encoder. Returns `(memory (batch, length, dim), padding mask (batch, length))`."""
        c = self.config
        inputs = prepare_inputs(
            {"encoder_tokens": encoder_tokens, "encoder_padding_mask": encoder_padding_mask}, c, require_decoder=False
        )
        tokens, mask = inputs["encoder_tokens"], inputs["encoder_padding_mask"]
        embedding = self.get_layer("token_embedding" if c.share_embeddings or c.encoder_only else "source_embedding")
        x = embedding(tokens)
        if c.position_encoding in ABSOLUTE_ENCODINGS:
            x = self.get_layer("encoder_position")(x)
        x = self.get_layer("encoder_dropout")(x, training=training)
        bias = self.get_layer("encoder_relative_bias")(x) if c.position_encoding == "relative" else None
        for i in range(c.num_encoder_layers):
            x = self.get_layer(f"encoder_block_{i}")(x, attention_mask=mask, attention_bias=bias, training=training)
        if c.use_final_norm:
            x = self.get_layer("encoder_norm")(x)
        return x, mask

    def _decode_tokens(
        self,
        tokens,
        start_index=0,
        key_length=None,
        caches=None,
        cross_caches=None,
        memory=None,
        memory_mask=None,
        self_mask=None,
    ):
        """Decoder stack over `tokens` at positions `start_index...`; with caches, one incremental step."""
        c = self.config
        y = self._target_embedding()(tokens)
        if c.position_encoding in ABSOLUTE_ENCODINGS:
            y = self.get_layer("decoder_position")(y, start_index=start_index)
        bias = None
        if c.position_encoding == "relative":
            bias = self.get_layer("decoder_relative_bias")(y, key_length=key_length, query_start=start_index)
        new_caches = []
        for i in range(c.num_decoder_layers):
            block = self.get_layer(f"decoder_block_{i}")
            if caches is None:
                y = block(y, memory, self_attention_mask=self_mask, memory_mask=memory_mask, self_attention_bias=bias)
            else:
                y, cache = block(
                    y,
                    None,
                    memory_mask=memory_mask,
                    self_attention_bias=bias,
                    self_attention_cache=caches[i],
                    cross_attention_cache=cross_caches[i],
                    cache_index=start_index,
                )
                new_caches.append(cache)
        if c.use_final_norm:
            y = self.get_layer("decoder_norm")(y)
        logits = self._target_embedding()(y, reverse=True) if c.tie_output else self.get_layer("output_projection")(y)
        return logits, new_caches

    def check_generate_options(
        self, encoder_tokens, max_length, beam_size, length_penalty, start_token_id=None, end_token_id=None
    ) -> tuple[int, int, int]:
        """Validates `generate` options; returns `(start_token_id, end_token_id, max_length)` with defaults filled."""
        c = self.config
        if c.encoder_only:
            raise ValueError("generate() needs a decoder; this Transformer is encoder-only (num_decoder_layers=0).")
        start = c.start_token_id if start_token_id is None else start_token_id
        end = c.end_token_id if end_token_id is None else end_token_id
        for label, value in (("start_token_id", start), ("end_token_id", end)):
            check_int(value, label, minimum=0)
            if value >= c.output_vocab_size:
                raise ValueError(
                    f"`{label}` must be below the target vocabulary size {c.output_vocab_size}. "
                    f"Received: {label}={value}"
                )
        check_int(beam_size, "beam_size", minimum=1)
        if not isinstance(length_penalty, (int, float)) or length_penalty < 0:
            raise ValueError(f"`length_penalty` must be a float >= 0. Received: length_penalty={length_penalty!r}")
        if max_length is None:
            source_length = encoder_tokens.shape[1] if hasattr(encoder_tokens, "shape") else None
            if source_length is None:
                raise ValueError("The source length is not static here; pass `max_length` explicitly.")
            max_length = int(source_length) + 50
        check_int(max_length, "max_length", minimum=1)
        if c.position_encoding == "learned":
            self.get_layer("decoder_position").check_length(max_length)
        return start, end, max_length

    def generate(
        self,
        encoder_tokens,
        encoder_padding_mask=None,
        max_length: int | None = None,
        beam_size: int = 1,
        length_penalty: float = 0.6,
        start_token_id: int | None = None,
        end_token_id: int | None = None,
        use_cache: bool = True,
        return_all_beams: bool = False,
    ) -> dict:
        """Decodes target sequences with greedy (`beam_size=1`) or beam search.

        With `use_cache=True` each step feeds only the newest token through the
        decoder and reads earlier keys/values from a cache; `use_cache=False`
        re-runs the decoder over the whole prefix (same results, for checking).
        Runs eagerly or inside `tf.function`; the loop is a `while_loop` with
        static shapes and stops once every sequence has ended.

        Args:
            encoder_tokens: int ids `(batch, source_length)`.
            encoder_padding_mask: optional boolean `(batch, source_length)`; derived from
                `pad_token_id` when omitted.
            max_length: int. Most tokens to generate (the end token included). Defaults to
                `source_length + 50` (the paper, section 6.1) when the source length is static.
            beam_size: int. 1 is greedy search.
            length_penalty: float >= 0. GNMT length penalty exponent alpha: beam
                scores are `log P / ((5 + length) / 6) ** alpha` (Wu et al. 2016,
                https://arxiv.org/abs/1609.08144). Defaults to 0.6 (the paper).
            start_token_id, end_token_id: int. Default to the config's.
            use_cache: bool. Incremental decoding with a key/value cache. Defaults to True.
            return_all_beams: bool. Beam search: return every beam, best first, as
                `(batch, beam_size, max_length)` tokens and `(batch, beam_size)` scores.

        Returns:
            `{"tokens": int32 (batch, max_length), "scores": float32 (batch,)}`: tokens after the
            end token are `pad_token_id`; scores are summed log-probabilities (greedy) or
            length-normalised ones (beam search).
        """
        c = self.config
        start, end, max_length = self.check_generate_options(
            encoder_tokens, max_length, beam_size, length_penalty, start_token_id, end_token_id
        )
        memory, memory_mask = self.encode(encoder_tokens, encoder_padding_mask)
        batch = ops.shape(memory)[0]
        if beam_size > 1:
            memory = ops.repeat(memory, beam_size, axis=0)
            memory_mask = ops.repeat(memory_mask, beam_size, axis=0)
        rows = batch * beam_size

        if use_cache:
            blocks = [self.get_layer(f"decoder_block_{i}") for i in range(c.num_decoder_layers)]
            cross_caches = [block.cross_attn.compute_cache(memory) for block in blocks]
            head_dim = c.hidden_dim // c.num_heads
            state = [  # `batch` rows: beam search repeats the state per beam
                ops.zeros((batch, 2, max_length, c.num_heads, head_dim), dtype=memory.dtype) for _ in blocks
            ]

            def step(tokens, index, caches):
                token = ops.expand_dims(ops.take(tokens, index, axis=1), 1)
                logits, caches = self._decode_tokens(
                    token,
                    start_index=index,
                    key_length=max_length,
                    caches=caches,
                    cross_caches=cross_caches,
                    memory_mask=memory_mask,
                )
                return logits[:, 0], caches
        else:
            state = []
            all_positions = ops.ones((rows, max_length), dtype="bool")

            def step(tokens, index, caches):
                logits, _ = self._decode_tokens(
                    tokens[:, :max_length], memory=memory, memory_mask=memory_mask, self_mask=all_positions
                )
                return ops.take(logits, index, axis=1), caches

        options = dict(max_length=max_length, start_token_id=start, end_token_id=end, pad_token_id=c.pad_token_id)
        if beam_size == 1:
            tokens, scores = decoding.greedy_search(step, state, batch, **options)
        else:
            tokens, scores = decoding.beam_search(
                step, state, batch, beam_size=beam_size, length_penalty=float(length_penalty), **options
            )
            if not return_all_beams:
                tokens, scores = tokens[:, 0], scores[:, 0]
        return {"tokens": tokens, "scores": scores}

    # ---- recipe hooks ------------------------------------------------------------------------
    def no_weight_decay_variables(self) -> list:
        """Variables that take no weight decay: biases, LayerNorm parameters and position tables."""
        skip = (keras.layers.LayerNormalization, LearnedPositionEncoding, RelativePositionBias)
        ids = set()
        for layer in self._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, skip):
                ids.update(id(v) for v in layer.trainable_variables)
        return [v for v in self.trainable_variables if id(v) in ids or len(v.shape) <= 1]


def _concrete(value) -> np.ndarray | None:
    """The values of an eager tensor or array, or None for a symbolic (traced) tensor."""
    if isinstance(value, (np.ndarray, list, tuple, int)):
        return np.asarray(value)
    try:
        return keras.ops.convert_to_numpy(value)
    except (RuntimeError, ValueError, TypeError):  # symbolic tensors have no values while tracing
        return None


def _check_token_ids(name: str, tokens, vocab_size: int) -> Any:
    tokens = ops.convert_to_tensor(tokens) if isinstance(tokens, (list, tuple)) else tokens
    shape = tuple(tokens.shape)
    if len(shape) != 2:
        raise ValueError(
            f"`{name}` must have rank 2 (batch, length). Received shape {shape}; add a batch axis with "
            "tokens[None] for a single sequence."
        )
    dtype = keras.backend.standardize_dtype(tokens.dtype)
    if "int" not in dtype:
        raise ValueError(f"`{name}` must hold integer token ids. Received dtype {dtype}; cast with astype('int32').")
    fix = "Check that the tokenizer's vocabulary matches the model's (vocab_size / target_vocab_size)."
    values = _concrete(tokens)
    if values is None:
        return _assert_in_vocabulary(name, tokens, vocab_size, fix)
    if values.size:
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise ValueError(f"`{name}` holds token id {bad}, outside the vocabulary [0, {vocab_size}). {fix}")
    return tokens


def _assert_in_vocabulary(name: str, tokens, vocab_size: int, fix: str) -> Any:
    """Traced ids (`tf.function`, `fit`, SavedModel): a run-time check that fails with the same words.

    Without it an id out of range is silently wrong: `keras.ops.take` wraps
    negative ids around, and TensorFlow's GPU gather returns zeros for ids past
    the end. The check is a TensorFlow assertion (`InvalidArgumentError` when it
    fails), so it runs on the TensorFlow backend only, and not inside XLA
    (`jit_compile=True`), which drops assertions; other backends and symbolic
    Keras inputs pass through unchecked.
    """
    if keras.backend.backend() != "tensorflow" or isinstance(tokens, keras.KerasTensor):
        return tokens
    import tensorflow as tf

    message = f"`{name}` holds a token id outside the vocabulary [0, {vocab_size}). {fix}"
    checks = [
        tf.debugging.assert_non_negative(tokens, message=message),
        tf.debugging.assert_less(tokens, tf.cast(vocab_size, tokens.dtype), message=message),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(tokens)


def _check_mask(name: str, mask, tokens_name: str, tokens) -> Any:
    mask = ops.convert_to_tensor(mask) if isinstance(mask, (list, tuple, np.ndarray)) else mask
    mask_shape, token_shape = tuple(mask.shape), tuple(tokens.shape)
    compatible = len(mask_shape) == len(token_shape) and all(
        a is None or b is None or a == b for a, b in zip(mask_shape, token_shape, strict=False)
    )
    if not compatible:
        raise ValueError(
            f"`{name}` must have the shape of `{tokens_name}` {token_shape} (True for real tokens, False for "
            f"padding). Received: {name}.shape={mask_shape}"
        )
    return ops.cast(mask, "bool")


def prepare_inputs(inputs, config: TransformerConfig, require_decoder: bool = True) -> dict:
    """Validates a model input dict and fills missing padding masks from `pad_token_id`."""
    sides = [("encoder", config.vocab_size)]
    if not config.encoder_only and require_decoder:
        sides.append(("decoder", config.output_vocab_size))
    if not isinstance(inputs, dict):
        if len(sides) == 1:
            inputs = {"encoder_tokens": inputs}
        else:
            raise ValueError(
                "A Transformer with a decoder takes a dict with keys 'encoder_tokens' and 'decoder_tokens' "
                f"(and optionally the padding masks). Received: {type(inputs).__name__}"
            )
    allowed = {f"{side}_{kind}" for side, _ in sides for kind in ("tokens", "padding_mask")}
    unknown = set(inputs) - allowed
    if unknown:
        raise ValueError(f"Unknown input key(s) {sorted(unknown)}. Valid keys: {sorted(allowed)}")
    prepared = {}
    for side, vocab in sides:
        key = f"{side}_tokens"
        if inputs.get(key) is None:
            raise ValueError(f"Missing input {key!r}. Expected keys: {sorted(allowed)}")
        tokens = _check_token_ids(key, inputs[key], vocab)
        mask = inputs.get(f"{side}_padding_mask")
        if mask is None:
            mask = ops.not_equal(tokens, config.pad_token_id)
        prepared[key] = tokens
        prepared[f"{side}_padding_mask"] = _check_mask(f"{side}_padding_mask", mask, key, tokens)
    return prepared


def _build_graph(c: TransformerConfig, dtype) -> tuple[dict, keras.KerasTensor]:
    """Lays out the functional training graph: embeddings -> encoder (-> decoder) -> logits."""
    inputs = {
        "encoder_tokens": keras.Input((None,), dtype="int32", name="encoder_tokens"),
        "encoder_padding_mask": keras.Input((None,), dtype="bool", name="encoder_padding_mask"),
    }
    if not c.encoder_only:
        inputs["decoder_tokens"] = keras.Input((None,), dtype="int32", name="decoder_tokens")
        inputs["decoder_padding_mask"] = keras.Input((None,), dtype="bool", name="decoder_padding_mask")

    def embedding(vocab, name):
        return TokenEmbedding(vocab, c.hidden_dim, scale=c.scale_embeddings, name=name, dtype=dtype)

    if c.share_embeddings or c.encoder_only:
        source_embedding = target_embedding = embedding(c.vocab_size, "token_embedding")
    else:
        source_embedding = embedding(c.vocab_size, "source_embedding")
        target_embedding = embedding(c.output_vocab_size, "target_embedding")

    def position(x, side):
        if c.position_encoding == "sinusoidal":
            return SinusoidalPositionEncoding(name=f"{side}_position", dtype=dtype)(x), None
        if c.position_encoding == "learned":
            return LearnedPositionEncoding(c.max_length, name=f"{side}_position", dtype=dtype)(x), None
        if c.position_encoding == "rotary":
            return x, None  # applied inside self-attention
        bias = RelativePositionBias(
            c.num_heads,
            bidirectional=side == "encoder",
            num_buckets=c.relative_num_buckets,
            max_distance=c.relative_max_distance,
            name=f"{side}_relative_bias",
            dtype=dtype,
        )(x)
        return x, bias

    block_args = dict(
        num_heads=c.num_heads,
        mlp_dim=c.mlp_dim,
        dropout_rate=c.dropout_rate,
        attention_dropout_rate=c.attention_dropout_rate,
        activation=c.activation,
        norm_first=c.norm_first,
        layer_norm_epsilon=c.layer_norm_epsilon,
        dtype=dtype,
        rotary_max_wavelength=10000.0 if c.position_encoding == "rotary" else None,
    )

    def norm(name):
        return LayerNorm(epsilon=c.layer_norm_epsilon, name=name, dtype=dtype)

    x, bias = position(source_embedding(inputs["encoder_tokens"]), "encoder")
    x = keras.layers.Dropout(c.dropout_rate, name="encoder_dropout", dtype=dtype)(x)
    for i in range(c.num_encoder_layers):
        x = SequenceEncoderBlock(name=f"encoder_block_{i}", **block_args)(
            x, attention_mask=inputs["encoder_padding_mask"], attention_bias=bias
        )
    if c.use_final_norm:
        x = norm("encoder_norm")(x)
    if not c.encoder_only:
        memory = x
        x, bias = position(target_embedding(inputs["decoder_tokens"]), "decoder")
        x = keras.layers.Dropout(c.dropout_rate, name="decoder_dropout", dtype=dtype)(x)
        for i in range(c.num_decoder_layers):
            x = TransformerDecoderBlock(name=f"decoder_block_{i}", **block_args)(
                x,
                memory,
                self_attention_mask=inputs["decoder_padding_mask"],
                memory_mask=inputs["encoder_padding_mask"],
                self_attention_bias=bias,
            )
        if c.use_final_norm:
            x = norm("decoder_norm")(x)
    if c.tie_output:
        logits = target_embedding(x, reverse=True)
    else:
        logits = keras.layers.Dense(c.output_vocab_size, name="output_projection", dtype="float32")(x)
    return inputs, logits
