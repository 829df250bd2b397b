"""Parity with `torch.nn.Transformer`: same weights, same masks (padding and causal), logits within 1e-4."""

import math

import numpy as np
import pytest
import torch

from keras_vit.models.transformer import Transformer

VOCAB, DIM, HEADS, FFN = 11, 16, 4, 32


def _torch_sinusoidal(length: int, dim: int) -> torch.Tensor:
    """PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(...) (Vaswani et al. 2017, section 3.5)."""
    position = torch.arange(length, dtype=torch.float64)[:, None]
    div = torch.pow(10000.0, torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = torch.sin(position / div), torch.cos(position / div)
    return table.float()


def _copy_attention(ours, theirs) -> None:
    w_q, w_k, w_v = theirs.in_proj_weight.detach().numpy().reshape(3, DIM, DIM)
    b_q, b_k, b_v = theirs.in_proj_bias.detach().numpy().reshape(3, DIM)
    ours.query_dense.set_weights([w_q.T, b_q])
    ours.key_dense.set_weights([w_k.T, b_k])
    ours.value_dense.set_weights([w_v.T, b_v])
    ours.output_dense.set_weights([theirs.out_proj.weight.detach().numpy().T, theirs.out_proj.bias.detach().numpy()])


def _copy_dense(ours, theirs) -> None:
    ours.set_weights([theirs.weight.detach().numpy().T, theirs.bias.detach().numpy()])


def _copy_norm(ours, theirs) -> None:
    ours.set_weights([theirs.weight.detach().numpy(), theirs.bias.detach().numpy()])


def _copy_from_torch(model, reference) -> None:
    for i, layer in enumerate(reference.encoder.layers):
        block = model.get_layer(f"encoder_block_{i}")
        _copy_attention(block.self_attn, layer.self_attn)
        _copy_dense(block.mlp.fc1, layer.linear1)
        _copy_dense(block.mlp.fc2, layer.linear2)
        _copy_norm(block.norm1, layer.norm1)
        _copy_norm(block.norm2, layer.norm2)
    for i, layer in enumerate(reference.decoder.layers):
        block = model.get_layer(f"decoder_block_{i}")
        _copy_attention(block.self_attn, layer.self_attn)
        _copy_attention(block.cross_attn, layer.multihead_attn)
        _copy_dense(block.mlp.fc1, layer.linear1)
        _copy_dense(block.mlp.fc2, layer.linear2)
        for n in (1, 2, 3):
            _copy_norm(getattr(block, f"norm{n}"), getattr(layer, f"norm{n}"))
    _copy_norm(model.get_layer("encoder_norm"), reference.encoder.norm)
    _copy_norm(model.get_layer("decoder_norm"), reference.decoder.norm)


def _padded_batch(rng, lengths, width):
    ids = np.zeros((len(lengths), width), dtype="int32")
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(3, VOCAB, length)
    return ids


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_matches_torch_transformer(norm_first, rng):
    torch.manual_seed(0)
    reference = torch.nn.Transformer(
        d_model=DIM,
        nhead=HEADS,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=FFN,
        dropout=0.0,
        batch_first=True,
        norm_first=norm_first,
    )
    reference.train()  # dropout is 0; train mode keeps torch off its nested-tensor fast path
    # torch.nn.Transformer always ends both stacks with a LayerNorm: final_norm=True matches it.
    model = Transformer(
        vocab_size=VOCAB,
        share_embeddings=True,
        hidden_dim=DIM,
        num_encoder_layers=2,
        num_decoder_layers=2,
        num_heads=HEADS,
        mlp_dim=FFN,
        dropout_rate=0.0,
        norm_first=norm_first,
        final_norm=True,
    )
    _copy_from_torch(model, reference)

    source = _padded_batch(rng, [7, 4, 6], 7)  # right padding with pad id 0
    target = _padded_batch(rng, [5, 3, 1], 5)
    target[:, 0] = 1  # start token
    logits = np.asarray(model({"encoder_tokens": source, "decoder_tokens": target}))

    table = torch.from_numpy(model.get_layer("token_embedding").get_weights()[0])

    def embed(ids):
        ids = torch.from_numpy(ids).long()
        return table[ids] * math.sqrt(DIM) + _torch_sinusoidal(ids.shape[1], DIM)[None]

    with torch.no_grad():
        hidden = reference(
            embed(source),
            embed(target),
            tgt_mask=torch.nn.Transformer.generate_square_subsequent_mask(target.shape[1], dtype=torch.bool),
            src_key_padding_mask=torch.from_numpy(source == 0),
            tgt_key_padding_mask=torch.from_numpy(target == 0),
            memory_key_padding_mask=torch.from_numpy(source == 0),
        )
        expected = (hidden @ table.T).numpy()
    assert logits.shape == expected.shape == (3, 5, VOCAB)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_encoder_only_matches_torch_encoder(rng):
    torch.manual_seed(1)
    layer = torch.nn.TransformerEncoderLayer(DIM, HEADS, FFN, dropout=0.0, batch_first=True)
    reference = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).train()
    model = Transformer(
        vocab_size=VOCAB,
        hidden_dim=DIM,
        num_encoder_layers=2,
        num_decoder_layers=0,
        num_heads=HEADS,
        mlp_dim=FFN,
        dropout_rate=0.0,
    )
    for i, torch_layer in enumerate(reference.layers):
        block = model.get_layer(f"encoder_block_{i}")
        _copy_attention(block.self_attn, torch_layer.self_attn)
        _copy_dense(block.mlp.fc1, torch_layer.linear1)
        _copy_dense(block.mlp.fc2, torch_layer.linear2)
        _copy_norm(block.norm1, torch_layer.norm1)
        _copy_norm(block.norm2, torch_layer.norm2)
    source = _padded_batch(rng, [6, 3], 6)
    logits = np.asarray(model(source))
    table = torch.from_numpy(model.get_layer("token_embedding").get_weights()[0])
    with torch.no_grad():
        x = table[torch.from_numpy(source).long()] * math.sqrt(DIM) + _torch_sinusoidal(6, DIM)[None]
        expected = (reference(x, src_key_padding_mask=torch.from_numpy(source == 0)) @ table.T).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
