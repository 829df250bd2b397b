"""keras_vit's MAE against Hugging Face `transformers.ViTMAEForPreTraining` on small random configs.

The HF model is saved with `save_pretrained` (model.safetensors + config.json,
as on the Hub) and read back by `keras_vit.MAE(..., weights=folder)`, whose
architecture then comes from the config. Every weight is perturbed (the fixed
sin-cos position tables excepted), so no zero or one initialisation hides a
mapping error; the same noise picks the same patches on both sides.
"""

import torch  # noqa: I001  (torch before TensorFlow)
import transformers
import numpy as np
import pytest

import keras_vit
from keras_vit.models.mae import sincos_position_table
from keras_vit.weights import mae_hf
from tests.parity.vit_parity_utils import TOLERANCE, max_diff, to_torch

SIZE, PATCH, CHANNELS = 16, 4, 3
HF_CONFIG = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    decoder_hidden_size=24,
    decoder_num_hidden_layers=2,
    decoder_num_attention_heads=3,
    decoder_intermediate_size=40,
    image_size=SIZE,
    patch_size=PATCH,
    num_channels=CHANNELS,
    mask_ratio=0.75,
)


def _with_sincos_tables(model):
    """The reference's own fixed tables: transformers v5's constructor leaves them at zero (it marks the
    modules initialised), so its `initialize_weights` is run with the marks cleared."""
    for part in [*model.modules(), *model.parameters()]:
        if getattr(part, "_is_hf_initialized", False):
            part._is_hf_initialized = False
    model.vit.embeddings.initialize_weights()
    model.decoder.initialize_weights(model.vit.embeddings.patch_embeddings.num_patches)
    return model


def _perturbed_hf_mae(norm_pix_loss: bool, seed: int = 0):
    config = transformers.ViTMAEConfig(**HF_CONFIG, norm_pix_loss=norm_pix_loss)
    model = _with_sincos_tables(transformers.ViTMAEForPreTraining(config))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "pos_embed" in name or "position_embeddings" in name:
                continue  # fixed sin-cos tables in both implementations
            noise = torch.randn(parameter.shape, generator=generator) * 0.1
            scale = parameter.ndim == 1 and "norm" in name and name.endswith("weight")
            parameter.copy_(noise + (1.0 if scale else 0.0))
    return model.eval()


def _inputs(batch: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.random((batch, SIZE, SIZE, CHANNELS), dtype=np.float32)
    noise = rng.random((batch, (SIZE // PATCH) ** 2), dtype=np.float32)
    return images, noise


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_loss_pred_and_mask_match_transformers(tmp_path, norm_pix_loss):
    reference = _perturbed_hf_mae(norm_pix_loss)
    reference.save_pretrained(tmp_path)
    mae = keras_vit.MAE("mae_vit_base_patch16", weights=str(tmp_path))
    assert (mae.config.hidden_dim, mae.decoder_dim, mae.decoder_mlp_dim, mae.norm_pix_loss) == (
        32,
        24,
        40,
        norm_pix_loss,
    )
    assert mae.config.layer_norm_epsilon == pytest.approx(1e-12)  # HF's default, read from config.json
    grid = (SIZE // PATCH, SIZE // PATCH)
    np.testing.assert_allclose(mae.get_layer("pos_embed").embeddings.numpy(), sincos_position_table(grid, 32))
    images, noise = _inputs()
    with torch.no_grad():
        expected = reference(pixel_values=to_torch(images), noise=torch.from_numpy(noise))
    out = mae(images, noise=noise)
    assert max_diff(out["mask"], expected.mask.numpy()) == 0.0
    assert max_diff(out["pred"], expected.logits.numpy()) < TOLERANCE  # same patch layout, no conversion
    assert abs(float(out["loss"]) - float(expected.loss)) < TOLERANCE


def test_position_tables_are_the_reference_sincos_with_a_zero_class_row():
    reference = _with_sincos_tables(transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(**HF_CONFIG)))
    grid = (SIZE // PATCH, SIZE // PATCH)
    encoder = reference.vit.embeddings.position_embeddings.detach().numpy()
    decoder = reference.decoder.decoder_pos_embed.detach().numpy()
    np.testing.assert_allclose(sincos_position_table(grid, 32), encoder, atol=1e-6)
    np.testing.assert_allclose(sincos_position_table(grid, 24), decoder, atol=1e-6)
    assert not sincos_position_table(grid, 32)[0, 0].any() and np.abs(encoder).max() > 0.5


def test_published_key_spelling_loads_too(tmp_path):
    """The Hub's checkpoints spell keys as transformers v4 did (encoder.layer.{i}.attention.attention.query,
    decoder.decoder_layers.{i}...), unlike v5's save_pretrained (decoder.decoder_encoder.layer.{i}...)."""
    from safetensors.numpy import save_file

    reference = _perturbed_hf_mae(False, seed=1)
    reference.save_pretrained(tmp_path)
    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    renames = {
        "attention.q_proj": "attention.attention.query",
        "attention.k_proj": "attention.attention.key",
        "attention.v_proj": "attention.attention.value",
        "attention.o_proj": "attention.output.dense",
        "mlp.fc1": "intermediate.dense",
        "mlp.fc2": "output.dense",
    }
    old = {}
    for key, value in state.items():
        key = key.replace("vit.layers.", "vit.encoder.layer.")
        for new_name, old_name in renames.items():
            key = key.replace(new_name, old_name)
        old[key] = np.ascontiguousarray(value)
    save_file(old, str(tmp_path / "model.safetensors"))
    mae = keras_vit.MAE("mae_vit_base_patch16", weights=str(tmp_path / "model.safetensors"))
    images, noise = _inputs(seed=2)
    with torch.no_grad():
        expected = reference(pixel_values=to_torch(images), noise=torch.from_numpy(noise))
    assert max_diff(mae(images, noise=noise)["pred"], expected.logits.numpy()) < TOLERANCE


def test_encoder_moves_into_a_vit_classifier(tmp_path):
    reference = _perturbed_hf_mae(False, seed=3)
    reference.save_pretrained(tmp_path)
    arch = mae_hf.arguments_from_hf_config(reference.config.to_dict())["encoder_kwargs"]
    vit = keras_vit.ViT(**arch, num_classes=0, weights=str(tmp_path))
    images, _ = _inputs(seed=4)
    with torch.no_grad():  # HF's encoder on every patch: a noise-free pass of ViTMAEModel with mask_ratio 0
        reference.vit.config.mask_ratio = 0.0
        noise = torch.arange((SIZE // PATCH) ** 2, dtype=torch.float32).repeat(len(images), 1)
        expected = reference.vit(pixel_values=to_torch(images), noise=noise).last_hidden_state[:, 0].numpy()
    assert max_diff(vit(images), expected) < TOLERANCE


@pytest.mark.parametrize(
    "name, sizes",
    [
        ("mae_vit_base_patch16", {}),
        (
            "mae_vit_large_patch16",
            dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
        ),
        (
            "mae_vit_huge_patch14",
            dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120, patch_size=14),
        ),
    ],
)
def test_paper_variants_count_the_reference_parameters(name, sizes):
    """Decoder 512 wide x 8 blocks x 16 heads on ViT-B/L/H: the same weights as transformers' ViTMAE."""
    with torch.device("meta"):
        reference = transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(**sizes))
    assert keras_vit.model_spec(name).num_params == sum(p.numel() for p in reference.parameters())
