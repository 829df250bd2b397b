"""Greedy and beam search: a hand-checked toy case, cached == uncached, beam 1 == greedy, tf.function, export."""

import math

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_vit.models import decoding
from keras_vit.models.transformer import Transformer
from keras_vit.models.transformer_export import export_generate

PAD, START, END, A, B = 0, 1, 2, 3, 4


def _bigram_step():
    """A fixed toy "model": the next-token distribution depends only on the last token."""
    probs = np.zeros((5, 5))
    probs[PAD] = [0.2] * 5  # rows after the end (greedy keeps stepping them)
    probs[END] = [0.2] * 5
    probs[START, [A, B]] = [0.6, 0.4]
    probs[A, [END, A, B]] = [0.3, 0.36, 0.34]
    probs[B, [END, A, B]] = [0.9, 0.05, 0.05]
    with np.errstate(divide="ignore"):
        table = ops.convert_to_tensor(np.log(probs).astype("float32"))

    def step(tokens, index, state):
        return ops.take(table, ops.take(tokens, index, axis=1), axis=0), state

    return step


def test_greedy_toy_case():
    tokens, scores = decoding.greedy_search(_bigram_step(), [], 1, max_length=3, start_token_id=START, end_token_id=END)
    # Greedy follows the locally best token: A (0.6), A (0.36), A (0.36).
    assert tokens.numpy().tolist() == [[A, A, A]]
    np.testing.assert_allclose(scores.numpy(), [math.log(0.6 * 0.36 * 0.36)], rtol=1e-6)


def test_beam_search_hand_checked():
    # By hand (beam 2, alpha 0): step 1 keeps A (.6), B (.4); step 2 finishes B-end (.36) and A-end (.18),
    # keeps AA (.216), AB (.204); step 3 finishes AB-end (.6*.34*.9 = .1836), which displaces A-end.
    tokens, scores = decoding.beam_search(
        _bigram_step(), [], 1, beam_size=2, max_length=3, start_token_id=START, end_token_id=END, length_penalty=0.0
    )
    assert tokens.numpy().tolist() == [[[B, END, PAD], [A, B, END]]]
    np.testing.assert_allclose(scores.numpy(), [[math.log(0.36), math.log(0.1836)]], rtol=1e-6)
    # Beam search beats greedy here (0.36 > 0.6 * 0.36 * 0.36).


def test_beam_search_length_penalty_hand_checked():
    # alpha = 10: lp(2) = (7/6)^10, lp(3) = (8/6)^10. Normalised: B-end log(.36)/lp(2) = -0.219,
    # AB-end log(.1836)/lp(3) = -0.095; the unfinished AAA (.6*.36*.36) joins at lp(3): -0.144.
    tokens, scores = decoding.beam_search(
        _bigram_step(), [], 1, beam_size=2, max_length=3, start_token_id=START, end_token_id=END, length_penalty=10.0
    )
    assert tokens.numpy().tolist() == [[[A, B, END], [A, A, A]]]
    lp3 = (8 / 6) ** 10
    np.testing.assert_allclose(scores.numpy(), [[math.log(0.1836) / lp3, math.log(0.6 * 0.36 * 0.36) / lp3]], rtol=1e-5)


def test_beam_search_rejects_bad_options():
    with pytest.raises(ValueError, match="beam_size"):
        decoding.beam_search(_bigram_step(), [], 1, beam_size=0, max_length=3, start_token_id=1, end_token_id=2)
    with pytest.raises(ValueError, match="length_penalty"):
        decoding.beam_search(
            _bigram_step(), [], 1, beam_size=2, max_length=3, start_token_id=1, end_token_id=2, length_penalty=-1.0
        )
    with pytest.raises(ValueError, match="max_length"):
        decoding.greedy_search(_bigram_step(), [], 1, max_length=0, start_token_id=1, end_token_id=2)


def _model(position_encoding="sinusoidal", depth=1, **kwargs):
    return Transformer(
        "transformer_tiny",
        position_encoding=position_encoding,
        num_encoder_layers=depth,
        num_decoder_layers=depth,
        **kwargs,
    )


def _source(rng, batch=3, length=6):
    source = rng.integers(3, 16, (batch, length)).astype("int32")
    source[-1, 4:] = PAD  # one padded row
    return source


@pytest.mark.parametrize("position_encoding", ["sinusoidal", "learned", "relative", "rotary"])
def test_cached_equals_uncached(position_encoding, rng):
    model = _model(position_encoding, depth=2)
    source = _source(rng, batch=2)
    for beam_size in (1, 3):
        cached = model.generate(source, max_length=5, beam_size=beam_size, length_penalty=0.6)
        uncached = model.generate(source, max_length=5, beam_size=beam_size, length_penalty=0.6, use_cache=False)
        np.testing.assert_array_equal(cached["tokens"], uncached["tokens"])
        np.testing.assert_allclose(cached["scores"], uncached["scores"], atol=1e-5)
    beams = model.generate(source, max_length=5, beam_size=3, return_all_beams=True)
    assert beams["tokens"].shape == (2, 3, 5)
    np.testing.assert_array_equal(beams["tokens"][:, 0], cached["tokens"])
    assert np.all(np.diff(beams["scores"].numpy(), axis=1) <= 0)  # best first


def test_greedy_scores_are_model_log_probs(rng):
    model = _model()
    source = _source(rng, batch=2)
    out = model.generate(source, max_length=5, end_token_id=15)  # an id it never picks: no early end
    tokens = out["tokens"].numpy()
    decoder_tokens = np.concatenate([np.full((2, 1), START), tokens[:, :-1]], axis=1).astype("int32")
    logits = model({"encoder_tokens": source, "decoder_tokens": decoder_tokens}).numpy()
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_array_equal(tokens, logits.argmax(-1))
    expected = np.take_along_axis(log_probs, tokens[..., None], -1)[..., 0].sum(1)
    np.testing.assert_allclose(out["scores"], expected, atol=1e-5)


def test_beam_size_one_equals_greedy(rng):
    model = _model("relative")
    source = _source(rng)
    greedy = decoding.greedy_search  # the model's beam_size=1 path; compare with an explicit 1-beam search
    out = model.generate(source, max_length=6)
    memory, mask = model.encode(source)

    def step(tokens, index, state):
        logits, _ = model._decode_tokens(
            tokens[:, :6], memory=memory, memory_mask=mask, self_mask=ops.ones((3, 6), "bool")
        )
        return ops.take(logits, index, axis=1), state

    beam_tokens, beam_scores = decoding.beam_search(
        step, [], 3, beam_size=1, max_length=6, start_token_id=START, end_token_id=END, length_penalty=0.0
    )
    greedy_tokens, greedy_scores = greedy(step, [], 3, max_length=6, start_token_id=START, end_token_id=END)
    np.testing.assert_array_equal(beam_tokens[:, 0], greedy_tokens)
    np.testing.assert_array_equal(out["tokens"], greedy_tokens)
    np.testing.assert_allclose(beam_scores[:, 0], greedy_scores, atol=1e-5)


def test_generate_in_tf_function_matches_eager(rng):
    model = _model()
    source = _source(rng)
    compiled = tf.function(
        lambda s: model.generate(s, max_length=6, beam_size=2), input_signature=[tf.TensorSpec((None, None), tf.int32)]
    )
    eager = model.generate(source, max_length=6, beam_size=2)
    traced = compiled(tf.constant(source))
    np.testing.assert_array_equal(traced["tokens"], eager["tokens"])
    np.testing.assert_allclose(traced["scores"], eager["scores"], atol=1e-5)


def test_export_generate_signature(tmp_path, rng):
    model = _model("relative")
    source = _source(rng)
    path = export_generate(model, str(tmp_path / "seq"), max_length=6)
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {"generate", "serving_default"}
    served = loaded.signatures["generate"](encoder_tokens=tf.constant(source))
    eager = model.generate(source, max_length=6)
    np.testing.assert_array_equal(served["tokens"], eager["tokens"])
    np.testing.assert_allclose(served["scores"], eager["scores"], atol=1e-5)
    # A longer source than any seen so far runs through the same signature.
    longer = loaded.signatures["generate"](encoder_tokens=tf.constant(_source(rng, batch=1, length=30)))
    assert longer["tokens"].shape == (1, 6)


def test_longer_sequences_decode_without_a_length_limit(rng):
    source = _source(rng, batch=2, length=20)  # longer than max_length, which bounds only learned tables
    for position_encoding in ("sinusoidal", "relative", "rotary"):
        out = _model(position_encoding, max_length=8).generate(source, max_length=12)
        assert out["tokens"].shape == (2, 12)


def test_learned_positions_reject_longer_sequences(rng):
    model = _model("learned", max_length=8)
    with pytest.raises(ValueError, match=r"longer than the learned position table \(max_length=8\)"):
        model.generate(_source(rng, length=6), max_length=9)
    with pytest.raises(ValueError, match="learned position table"):
        model.generate(_source(rng, length=9), max_length=4)
    with pytest.raises(ValueError, match="learned position table"):
        model({"encoder_tokens": _source(rng, length=9), "decoder_tokens": np.ones((3, 2), "int32")})


def test_generate_rejects_bad_options(rng):
    model = _model()
    source = _source(rng)
    with pytest.raises(ValueError, match="end_token_id"):
        model.generate(source, max_length=4, end_token_id=16)
    with pytest.raises(ValueError, match="beam_size"):
        model.generate(source, max_length=4, beam_size=0)
    with pytest.raises(ValueError, match="encoder-only"):
        Transformer("transformer_encoder_tiny").generate(source, max_length=4)


def test_cached_decoding_feeds_one_token_per_step(rng):
    model = _model()
    block = model.get_layer("decoder_block_0")
    seen, original = [], block.call

    def spy(tokens, *args, **kwargs):
        seen.append(tokens.shape[1])
        return original(tokens, *args, **kwargs)

    block.call = spy
    model.generate(_source(rng, batch=1), max_length=4, end_token_id=15)  # 15 is never picked: 4 full steps
    assert seen == [1, 1, 1, 1]
    seen.clear()
    model.generate(_source(rng, batch=1), max_length=4, end_token_id=15, use_cache=False)
    assert seen == [4, 4, 4, 4]  # the uncached path re-runs the whole prefix buffer each step
