"""Weights for keras_vit models: read published checkpoints, save, convert, and the checkpoint catalogue.

Formats read: the original ViT JAX `.npz` (incl. AugReg and big_vision
layouts), timm `.safetensors` (ViT, DeiT, registers, LayerScale), Hugging Face
`transformers` ViT/DeiT and CLIP/SigLIP/DINOv2 vision-tower `.safetensors`, and keras_vit `.weights.h5`. PyTorch
pickles are refused. Everything goes through timm's key names, so one key map
(`timm_keys`) serves every format. This package never imports
`keras_vit.models`: it works on any model with keras_vit layer names.
"""

from keras_vit.weights.arch import infer_arch
from keras_vit.weights.catalog import (
    CHECKPOINTS,
    PretrainedCheckpoint,
    checkpoint_info,
    download_checkpoint,
    list_checkpoints,
)
from keras_vit.weights.checksum import sha256_of, verify_sha256
from keras_vit.weights.errors import CheckpointError
from keras_vit.weights.formats import Checkpoint, detect_format, read_checkpoint
from keras_vit.weights.hf_towers import arch_from_hf_config
from keras_vit.weights.loading import LoadReport, load_pretrained, load_state_dict, save_weights
from keras_vit.weights.safetensors_io import read_safetensors, write_safetensors
from keras_vit.weights.timm_keys import model_state_dict

__all__ = [
    "CHECKPOINTS",
    "Checkpoint",
    "CheckpointError",
    "LoadReport",
    "PretrainedCheckpoint",
    "arch_from_hf_config",
    "checkpoint_info",
    "detect_format",
    "download_checkpoint",
    "infer_arch",
    "list_checkpoints",
    "load_pretrained",
    "load_state_dict",
    "model_state_dict",
    "read_checkpoint",
    "read_safetensors",
    "save_weights",
    "sha256_of",
    "verify_sha256",
    "write_safetensors",
]
