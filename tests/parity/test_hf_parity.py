"""keras_vit against Hugging Face `transformers` ViT/DeiT on tiny random configs.

The HF models save themselves with `save_pretrained` (model.safetensors +
config.json, as on the Hub); keras_vit reads the file and, for the CLI, the
config. HF's LayerNorm epsilon defaults to 1e-12, which our model takes as
`layer_norm_epsilon`.
"""

import torch  # noqa: I001  (torch before TensorFlow)
import transformers
import json
import shutil
import warnings

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.weights import CheckpointError, arch_from_hf_config
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


# ---- config.json beside the checkpoint ---------------------------------------------------------------------------
SMALL_ARCH = dict(image_size=SIZE, patch_size=8, hidden_dim=64, depth=2, num_heads=4, mlp_dim=128)


def small_activation_classifier(folder, seed: int = 3, num_labels: int = 6, **overrides):
    """A ViTForImageClassification (layer_norm_eps=1e-12) saved with save_pretrained into `folder`.

    Its embeddings are scaled down (x0.1), so the tokens entering the first
    LayerNorm have a small variance and the epsilon visibly changes the output,
    as in checkpoints trained with 1e-12: loaded with 1e-6 instead, the logits
    move by ~2e-3.
    """
    config = transformers.ViTConfig(**dict(HF_CONFIG, **overrides), num_labels=num_labels, layer_norm_eps=1e-12)
    reference = randomize_(transformers.ViTForImageClassification(config), seed=seed)
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if name.startswith("vit.embeddings."):
                parameter.mul_(0.1)
    reference.save_pretrained(folder, safe_serialization=True)
    return reference


def test_layer_norm_eps_of_config_json_is_adopted_and_logits_match(tmp_path):
    reference = small_activation_classifier(tmp_path / "hf")
    x = images(2, SIZE, seed=3)
    with torch.no_grad():
        expected = reference(pixel_values=to_torch(x)).logits.numpy()
    # Without its config.json the file loads into the 1e-6 model it was not trained as: off by far more than TOLERANCE.
    (tmp_path / "bare").mkdir()
    shutil.copy(tmp_path / "hf" / "model.safetensors", tmp_path / "bare" / "model.safetensors")
    unaware = keras_vit.ViT(**SMALL_ARCH, num_classes=6, weights=str(tmp_path / "bare" / "model.safetensors"))
    assert unaware.config.layer_norm_epsilon == 1e-6
    assert max_diff(unaware(x), expected) > 10 * TOLERANCE
    # With it (the folder save_pretrained wrote), the model adopts 1e-12 and matches.
    with pytest.warns(
        UserWarning, match=r"Using layer_norm_eps=1e-12 from '.*config.json' \(the model was built with 1e-06\)"
    ):
        model = keras_vit.ViT(**SMALL_ARCH, num_classes=6, weights=str(tmp_path / "hf"))
    assert model.config.layer_norm_epsilon == 1e-12
    assert max_diff(model(x), expected) <= TOLERANCE
    assert model.get_config()["layer_norm_epsilon"] == 1e-12
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert max_diff(reloaded(x), expected) <= TOLERANCE


def test_a_traced_model_picks_up_the_adopted_epsilon(tmp_path):
    reference = small_activation_classifier(tmp_path, seed=4)
    x = images(2, SIZE, seed=4)
    with torch.no_grad():
        expected = reference(pixel_values=to_torch(x)).logits.numpy()
    model = keras_vit.ViT(**SMALL_ARCH, num_classes=6)
    model.predict(x, verbose=0)  # traces predict_function with epsilon 1e-6
    with pytest.warns(UserWarning, match="Using layer_norm_eps=1e-12"):
        report = model.load_pretrained(str(tmp_path / "model.safetensors"))
    assert report.layer_norm_epsilon == 1e-12 and report.config == str(tmp_path / "config.json")
    assert max_diff(model.predict(x, verbose=0), expected) <= TOLERANCE


@pytest.mark.parametrize(
    "variant_args, message",
    [
        (
            {"variant": "vit_tiny_patch16_224", "image_size": SIZE, "patch_size": 8, "num_classes": 6},
            r"hidden_size=64 in config.json, but the model has hidden_dim=192",
        ),
        ({"num_heads": 2}, r"num_attention_heads=4 in config.json, but the model has num_heads=2"),
        ({"qkv_bias": False}, r"qkv_bias=True in config.json, but the model has qkv_bias=False"),
        ({"depth": 1}, r"num_hidden_layers=2 in config.json, but the model has depth=1"),
        ({"num_register_tokens": 1}, r"num_register_tokens=0 in config.json, but the model has num_register_tokens=1"),
    ],
)
def test_a_model_contradicting_config_json_is_refused_naming_both_values(variant_args, message, tmp_path):
    small_activation_classifier(tmp_path)
    args = dict(variant_args)
    variant = args.pop("variant", None)  # a registered variant, or the small architecture with one change
    model = keras_vit.ViT(variant, **args) if variant else keras_vit.ViT(**dict(SMALL_ARCH, num_classes=6) | args)
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(CheckpointError, match=rf"(?s)Model '.*' contradicts '{tmp_path / 'config.json'}'.*{message}"):
        model.load_pretrained(str(tmp_path))
    assert all((a == b.numpy()).all() for a, b in zip(before, model.weights))
    assert model.config.layer_norm_epsilon == 1e-6


def test_image_size_and_class_count_still_adapt_with_a_config(tmp_path):
    reference = small_activation_classifier(tmp_path)
    with pytest.warns(UserWarning, match="Resampling the position embedding"):
        model = keras_vit.ViT(**dict(SMALL_ARCH, image_size=48), num_classes=3)
        report = model.load_pretrained(str(tmp_path))
    assert report.head == "replaced" and report.resampled == ((4, 4), (6, 6))
    assert model.config.layer_norm_epsilon == 1e-12
    same = keras_vit.ViT(**SMALL_ARCH, num_classes=0, weights=str(tmp_path))  # headless: the head is dropped
    x = images(2, SIZE, seed=5)
    with torch.no_grad():
        tokens = reference.vit(pixel_values=to_torch(x)).last_hidden_state.numpy()
    assert max_diff(same(x), tokens[:, 0]) <= TOLERANCE


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"hidden_size": 32}, r"(?s)does not describe the checkpoint .*hidden_size: config 32, file 64"),
        ({"intermediate_size": 64}, r"intermediate_size: config 64, file 128"),
        ({"num_labels": 7, "id2label": {str(i): str(i) for i in range(7)}}, r"num_labels: config 7, file 6"),
        ({"hidden_act": "gelu_new"}, r"config.json': keras_vit's MLP uses exact \(erf\) GELU"),
        ({"model_type": "swin"}, r"config.json': Only Hugging Face ViT/DeiT configs are supported"),
        ({"image_size": 48}, r"image_size: config 48x48 \(36 patches\), file a position table of 16 patches"),
        ({"layer_norm_eps": -1e-6}, r"config.json' holds impossible values: layer_norm_eps=-1e-06"),
        ({"num_labels": "six"}, r"config.json': invalid literal for int\(\) with base 10: 'six'"),
        ({"qkv_bias": "no"}, r"impossible values: qkv_bias='no'"),
    ],
)
def test_config_json_that_does_not_fit_its_checkpoint_is_refused(edit, message, tmp_path):
    small_activation_classifier(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | edit))
    model = keras_vit.ViT(**SMALL_ARCH, num_classes=6)
    with pytest.raises(CheckpointError, match=message):
        model.load_pretrained(str(tmp_path))


def test_damaged_config_json_is_refused_naming_it(tmp_path):
    small_activation_classifier(tmp_path)
    model = keras_vit.ViT(**SMALL_ARCH, num_classes=6)
    (tmp_path / "config.json").write_text('{"hidden_size": 64, "hidden_size": 32}')
    with pytest.raises(CheckpointError, match=r"config.json' repeats the key\(s\) \['hidden_size'\]"):
        model.load_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text('{"hidden_size": 64,')
    with pytest.raises(CheckpointError, match=r"config.json' is not valid JSON"):
        model.load_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text("[64]")
    with pytest.raises(CheckpointError, match=r"config.json' holds a JSON list"):
        model.load_pretrained(str(tmp_path))


def test_folders_without_a_single_safetensors_file_are_explained(tmp_path):
    model = keras_vit.ViT(**SMALL_ARCH, num_classes=6)
    with pytest.raises(CheckpointError, match=r"holds no model.safetensors"):
        model.load_pretrained(str(tmp_path))
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"sharded checkpoint"):
        model.load_pretrained(str(tmp_path))
    (tmp_path / "model.safetensors.index.json").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(CheckpointError, match=r"PyTorch pickle checkpoint"):
        model.load_pretrained(str(tmp_path))


def test_config_json_fuzz_loads_or_raises_checkpoint_error(tmp_path):
    """Random values in config.json fields: the loader either loads (the model agrees) or raises CheckpointError."""
    small_activation_classifier(tmp_path)
    original = json.loads((tmp_path / "config.json").read_text())
    fields = [
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "patch_size",
        "image_size",
        "num_channels",
        "qkv_bias",
        "layer_norm_eps",
        "num_labels",
        "id2label",
        "model_type",
        "hidden_act",
        "architectures",
        "num_register_tokens",
    ]
    values = [None, -1, 0, 1, 4, 64, 2**70, 1.5, float("inf"), "64", "", True, [], {}, [64], {"0": "a"}, "vit"]
    model = keras_vit.ViT(**SMALL_ARCH, num_classes=6)
    rng = np.random.default_rng(0)
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(60):
        edit = {
            fields[rng.integers(len(fields))]: values[rng.integers(len(values))] for _field in range(rng.integers(1, 3))
        }
        (tmp_path / "config.json").write_text(json.dumps(original | edit))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.load_pretrained(str(tmp_path))
            outcomes["loaded"] += 1
        except CheckpointError:
            outcomes["refused"] += 1
    assert outcomes["loaded"] > 0 and outcomes["refused"] > 30, outcomes


def test_mutated_hf_checkpoint_loads_or_raises_checkpoint_error(tmp_path):
    """The fuzz mutations of tests/weights applied to a save_pretrained folder: HF key mapping included."""
    from tests.weights.test_fuzz_readers import mutate, time_bound

    small_activation_classifier(tmp_path)
    good = (tmp_path / "model.safetensors").read_bytes()
    model = keras_vit.ViT(**SMALL_ARCH, num_classes=6)
    rng = np.random.default_rng(5)
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(80):
        data, how = mutate(good, rng)
        (tmp_path / "model.safetensors").write_bytes(data)
        try:
            with warnings.catch_warnings(), time_bound(f"hf {case} ({how})"):
                warnings.simplefilter("ignore")
                model.load_pretrained(str(tmp_path))
            outcomes["loaded"] += 1
        except CheckpointError:
            outcomes["refused"] += 1
    assert outcomes["loaded"] > 0 and outcomes["refused"] > 40, outcomes
