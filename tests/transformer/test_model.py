"""keras_vit.Transformer: variants, parameter counts, serialization, training step and input errors."""

import inspect

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.models.transformer import Transformer, TransformerConfig, transformer_param_count
from keras_vit.training.sequence import LabelSmoothedSequenceLoss, TokenAccuracy

TINY = dict(
    vocab_size=13,
    hidden_dim=16,
    num_encoder_layers=1,
    num_decoder_layers=1,
    num_heads=2,
    mlp_dim=24,
    dropout_rate=0.0,
    max_length=16,
)


def _batch(rng, batch=2, source=6, target=5, vocab=13):
    return {
        "encoder_tokens": rng.integers(3, vocab, (batch, source)).astype("int32"),
        "decoder_tokens": rng.integers(3, vocab, (batch, target)).astype("int32"),
    }


def test_registered_variants_match_the_paper():
    base, big = keras_vit.model_spec("transformer_base"), keras_vit.model_spec("transformer_big")
    assert (base.arch["hidden_dim"], base.arch["num_heads"], base.arch["mlp_dim"], base.arch["dropout_rate"]) == (
        512,
        8,
        2048,
        0.1,
    )
    assert (big.arch["hidden_dim"], big.arch["num_heads"], big.arch["mlp_dim"], big.arch["dropout_rate"]) == (
        1024,
        16,
        4096,
        0.3,
    )
    assert base.arch["num_encoder_layers"] == base.arch["num_decoder_layers"] == 6
    # Table 3 of Vaswani et al. 2017: 65M (base) and 213M (big) parameters, with a ~37k shared vocabulary.
    assert abs(base.num_params - 65e6) / 65e6 < 0.05
    assert abs(big.num_params - 213e6) / 213e6 < 0.02
    assert {"transformer_tiny", "transformer_encoder_tiny"} <= set(keras_vit.list_models("transformer*"))


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(share_embeddings=True, position_encoding="learned"),
        dict(tie_output=False, target_vocab_size=9, position_encoding="relative", norm_first=True),
        dict(num_decoder_layers=0, position_encoding="relative"),
        dict(num_decoder_layers=0, tie_output=False, final_norm=True, position_encoding="learned"),
        dict(position_encoding="rotary", final_norm=True),
    ],
)
def test_param_count_formula_matches_built_model(overrides):
    config = dict(TINY, **overrides)
    assert Transformer(**config).count_params() == transformer_param_count(TransformerConfig(**config))


def test_create_model_and_overrides():
    model = keras_vit.create_model("transformer_tiny", position_encoding="relative")
    assert isinstance(model, Transformer) and model.config.position_encoding == "relative"
    assert model.config.hidden_dim == 32
    with pytest.raises(ValueError, match="not a Transformer variant"):
        Transformer("vit_tiny_patch16_224")


def test_config_keys_follow_the_constructor():
    fields = set(inspect.signature(TransformerConfig).parameters)
    config = Transformer(**TINY).get_config()
    assert fields | {"variant", "name"} == set(config)


@pytest.mark.parametrize("position_encoding", ["sinusoidal", "learned", "relative", "rotary"])
def test_keras_save_load_safe_mode(position_encoding, tmp_path, rng):
    model = Transformer(**TINY, position_encoding=position_encoding, tie_output=position_encoding != "learned")
    batch = _batch(rng)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(restored, Transformer) and restored.config == model.config
    np.testing.assert_allclose(restored(batch), model(batch), atol=1e-6)
    clone = Transformer.from_config(model.get_config())
    assert clone.count_params() == model.count_params()


def test_explicit_padding_masks_equal_derived_ones(rng):
    model = Transformer(**TINY)
    batch = _batch(rng)
    batch["encoder_tokens"][1, 4:] = 0
    derived = model(batch)
    explicit = model(
        dict(batch, encoder_padding_mask=batch["encoder_tokens"] != 0, decoder_padding_mask=np.ones((2, 5), bool))
    )
    np.testing.assert_allclose(explicit, derived, atol=1e-6)
    # Padding changes the result at all: the masks are used.
    unmasked = model(dict(batch, encoder_padding_mask=np.ones((2, 6), bool)))
    assert np.abs(np.asarray(unmasked)[1] - np.asarray(derived)[1]).max() > 1e-4


def test_fit_updates_every_variable(rng):
    model = Transformer(**TINY, position_encoding="relative")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=LabelSmoothedSequenceLoss(),
        metrics=[TokenAccuracy()],
        run_eagerly=True,
    )  # eager: 3 steps cost less than a trace
    batch = _batch(rng, batch=8)
    labels = rng.integers(3, 13, (8, 5)).astype("int32")
    before = [v.numpy().copy() for v in model.trainable_variables]
    history = model.fit(batch, labels, epochs=3, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    for old, variable in zip(before, model.trainable_variables, strict=True):
        assert not np.allclose(old, variable.numpy()), variable.path


def test_mixed_precision_keeps_float32_logits(rng):
    model = Transformer(**TINY, dtype="mixed_bfloat16")
    logits = model(_batch(rng))
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.isfinite(np.asarray(logits)).all()
    assert model.generate(_batch(rng)["encoder_tokens"], max_length=3)["tokens"].shape == (2, 3)


def test_encoder_only_accepts_ids_alone(rng):
    model = keras_vit.Transformer("transformer_encoder_tiny")
    ids = rng.integers(0, 16, (2, 7)).astype("int32")
    assert tuple(model(ids).shape) == (2, 7, 16)
    np.testing.assert_allclose(model({"encoder_tokens": ids}), model(ids), atol=1e-6)


def test_mismatched_vocabulary_errors(rng):
    with pytest.raises(ValueError, match=r"sizes differ. Received: vocab_size=13, target_vocab_size=9"):
        Transformer(**dict(TINY, share_embeddings=True, target_vocab_size=9))
    with pytest.raises(ValueError, match=r"end_token_id.*below the target vocabulary size 2"):
        Transformer(**dict(TINY, target_vocab_size=2))
    model = Transformer(**dict(TINY, target_vocab_size=9))
    batch = _batch(rng, vocab=9)
    batch["decoder_tokens"][0, 0] = 11  # valid for the source vocabulary, not the target one
    with pytest.raises(ValueError, match=r"`decoder_tokens` holds token id 11, outside the vocabulary \[0, 9\)"):
        model(batch)


def test_token_id_errors(rng):
    model = Transformer(**TINY)
    batch = _batch(rng)
    batch["encoder_tokens"][1, 2] = 13
    with pytest.raises(ValueError, match=r"`encoder_tokens` holds token id 13, outside the vocabulary \[0, 13\)"):
        model(batch)
    batch = _batch(rng)
    batch["encoder_tokens"][0, 0] = -1
    with pytest.raises(ValueError, match="token id -1"):
        model(batch)
    with pytest.raises(ValueError, match="integer token ids"):
        model(dict(_batch(rng), encoder_tokens=np.zeros((2, 6), "float32")))
    with pytest.raises(ValueError, match=r"rank 2 \(batch, length\)"):
        model(dict(_batch(rng), encoder_tokens=np.ones((6,), "int32")))
    with pytest.raises(ValueError, match="token id 20"):
        model.generate(np.full((1, 4), 20, "int32"), max_length=3)


def test_token_id_errors_in_graph_mode(rng):
    """Traced ids have no values to check up front: a run-time assertion fails with the same words."""
    import tensorflow as tf

    model = Transformer(**dict(TINY, target_vocab_size=9))
    forward = tf.function(lambda batch: model(batch))
    good = _batch(rng, vocab=9)
    assert tuple(forward(good).shape) == (2, 5, 9)
    for key, bad_id, vocab in (("decoder_tokens", 11, 9), ("encoder_tokens", 13, 13), ("encoder_tokens", -1, 13)):
        batch = _batch(rng, vocab=9)
        batch[key][1, 2] = bad_id
        with pytest.raises(
            tf.errors.InvalidArgumentError, match=rf"`{key}` holds a token id outside the vocabulary \[0, {vocab}\)"
        ):
            forward(batch)
    # fit traces the model too: an out-of-range target id stops training instead of training on a wrong row
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batch = _batch(rng, vocab=9)
    batch["decoder_tokens"][0, 0] = 9
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`decoder_tokens` holds a token id outside"):
        model.fit(batch, batch["decoder_tokens"], epochs=1, verbose=0)


def test_mask_and_key_errors(rng):
    model = Transformer(**TINY)
    batch = _batch(rng)
    with pytest.raises(ValueError, match=r"`encoder_padding_mask` must have the shape of `encoder_tokens` \(2, 6\)"):
        model(dict(batch, encoder_padding_mask=np.ones((2, 5), bool)))
    with pytest.raises(ValueError, match="decoder_padding_mask"):
        model(dict(batch, decoder_padding_mask=np.ones((2, 1, 5), bool)))
    with pytest.raises(ValueError, match="Missing input 'decoder_tokens'"):
        model({"encoder_tokens": batch["encoder_tokens"]})
    with pytest.raises(ValueError, match=r"Unknown input key\(s\) \['labels'\]"):
        model(dict(batch, labels=batch["decoder_tokens"]))
    with pytest.raises(ValueError, match="takes a dict"):
        model(batch["encoder_tokens"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden_dim=18, num_heads=4), r"divisible by `num_heads`"),
        (dict(position_encoding="alibi"), r"position_encoding='alibi'"),
        (dict(position_encoding="rotary", hidden_dim=12, num_heads=4), r"even head dimension"),
        (dict(num_decoder_layers=-1), r"num_decoder_layers=-1"),
        (dict(dropout_rate=1.0), r"dropout_rate=1.0"),
        (dict(activation="tanh"), r"activation='tanh'"),
        (dict(blocks=2), r"Unknown Transformer argument\(s\) \['blocks'\]"),
    ],
)
def test_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        Transformer(**dict(TINY, **overrides))


def test_no_weight_decay_variables():
    model = Transformer(**TINY, position_encoding="relative")
    skipped = {v.path for v in model.no_weight_decay_variables()}
    assert "encoder_relative_bias/embeddings" in skipped
    assert "encoder_block_0/norm1/gamma" in skipped and "encoder_block_0/mlp/fc1/bias" in skipped
    assert "encoder_block_0/mlp/fc1/kernel" not in skipped and "source_embedding/embeddings" not in skipped
