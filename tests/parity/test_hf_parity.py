"""keras_vit against Hugging Face `transformers` ViT/DeiT on tiny random configs.

The HF models save themselves with `save_pretrained` (model.safetensors +
config.json, as on the Hub); keras_vit reads the file and, for the CLI, the
config. HF's LayerNorm epsilon defaults to 1e-12, which our model takes as
`layer_norm_epsilon`.
"""

import torch  # noqa: I001  (torch before TensorFlow)
import transformers
import json
import pytest

import keras_vit
from keras_vit.weights import arch_from_hf_config
from keras_vit.weights.cli import convert
from tests.parity.vit_parity_utils import TOLERANCE, images, max_diff, randomize_, to_torch

SIZE = 32
HF_CONFIG = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    image_size=SIZE,
    patch_size=8,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def saved(model, tmp_path):
    model.save_pretrained(tmp_path, safe_serialization=True)
    return str(tmp_path / "model.safetensors"), json.loads((tmp_path / "config.json").read_text())


def test_vit_model_tokens_blocks_and_pooler_match(tmp_path):
    reference = randomize_(transformers.ViTModel(transformers.ViTConfig(**HF_CONFIG)), seed=0)
    path, config = saved(reference, tmp_path)
    arch = arch_from_hf_config(config)
    assert arch["num_classes"] == 0 and arch["layer_norm_epsilon"] == 1e-12
    model = keras_vit.ViT(**arch, representation_size=64, weights=path)  # the pooler is ViT's pre_logits layer
    x = images(2, SIZE)
    with torch.no_grad():
        out = reference(pixel_values=to_torch(x), output_hidden_states=True)
    ours = model.forward_intermediates(x)
    assert max_diff(ours["tokens"], out.last_hidden_state.numpy()) <= TOLERANCE
    for i, block in enumerate(ours["blocks"]):
        assert max_diff(block, out.hidden_states[i + 1].numpy()) <= TOLERANCE
    assert max_diff(model(x), out.pooler_output.numpy()) <= TOLERANCE


def test_vit_for_image_classification_logits_match_and_cli_reads_config(tmp_path):
    config = transformers.ViTConfig(**HF_CONFIG, num_labels=6)
    reference = randomize_(transformers.ViTForImageClassification(config), seed=1)
    path, config_dict = saved(reference, tmp_path)
    model = keras_vit.ViT(**arch_from_hf_config(config_dict), weights=path)
    x = images(2, SIZE, seed=1)
    with torch.no_grad():
        expected = reference(pixel_values=to_torch(x)).logits.numpy()
    assert max_diff(model(x), expected) <= TOLERANCE
    # The convert command finds config.json beside the file and writes our own format.
    summary = convert(path, str(tmp_path / "vit.weights.h5"))
    assert "from hf safetensors" in summary
    rebuilt = keras_vit.ViT(**arch_from_hf_config(config_dict))
    rebuilt.load_pretrained(str(tmp_path / "vit.weights.h5"))
    assert max_diff(rebuilt(x), expected) <= TOLERANCE


def test_deit_with_teacher_logits_match(tmp_path):
    config = transformers.DeiTConfig(**HF_CONFIG, num_labels=5)
    reference = randomize_(transformers.DeiTForImageClassificationWithTeacher(config), seed=2)
    path, config_dict = saved(reference, tmp_path)
    arch = arch_from_hf_config(config_dict)
    assert arch["distillation_token"] and arch["num_classes"] == 5
    model = keras_vit.DeiT(**arch, weights=path)
    x = images(2, SIZE, seed=2)
    with torch.no_grad():
        out = reference(pixel_values=to_torch(x))
    assert max_diff(model(x), out.logits.numpy()) <= TOLERANCE
    heads = model.heads_model()(x)
    assert max_diff(heads["cls"], out.cls_logits.numpy()) <= TOLERANCE
    assert max_diff(heads["dist"], out.distillation_logits.numpy()) <= TOLERANCE


def test_hf_config_with_approximate_gelu_is_refused():
    with pytest.raises(ValueError, match=r"exact \(erf\) GELU.*hidden_act='gelu_new'"):
        arch_from_hf_config({"model_type": "vit", "hidden_act": "gelu_new"})
