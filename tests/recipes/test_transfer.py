"""Pretrain -> linear probe -> fine-tune with layer decay beats training from scratch on the same small budget."""

import pytest

from keras_vit.recipes.transfer import transfer_experiment


@pytest.mark.slow
def test_fine_tuning_beats_scratch_on_few_images(tmp_path):
    result = transfer_experiment(str(tmp_path), verbose=0, tensorboard=False)
    # pretrained on one half of the training images; adapted on 3 images per digit of the other half
    assert result.pretrain_accuracy >= 0.9, result
    assert result.probe_accuracy > result.scratch_accuracy + 0.2, result  # frozen features already separate digits
    assert result.finetune_accuracy > result.scratch_accuracy + 0.2, result
