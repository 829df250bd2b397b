"""Pictures of what a ViT/DeiT attends to and computes, for your own model and images.

Attention maps per block and head, attention rollout (Abnar & Zuidema 2020),
position-embedding similarity and mean attention distance (ViT paper, fig. 7),
per-block activation statistics, and training curves from CSV logs. The
`compute` functions return numpy arrays; the `plot_*` functions (matplotlib,
the `plot` extra) also write a PNG and return the arrays they drew.

    from keras_vit import visualize
    maps = visualize.attention_rollout(model, images)                # (batch, rows, columns)
    visualize.plot_attention_rollout(model, images, "rollout.png", display_images=photos)
"""

from keras_vit.visualize.activations import activation_statistics
from keras_vit.visualize.attention import (
    attention_maps,
    attention_rollout,
    attention_weights,
    fuse_heads,
    normalize_maps,
    rollout,
    upsample,
)
from keras_vit.visualize.curves import read_training_log
from keras_vit.visualize.distance import attention_distance, mean_attention_distance
from keras_vit.visualize.images import load_image, prepare_images
from keras_vit.visualize.mae import mae_reconstruction, plot_mae_reconstruction
from keras_vit.visualize.plots import (
    plot_activation_statistics,
    plot_attention_heads,
    plot_attention_rollout,
    plot_mean_attention_distance,
    plot_position_embedding_similarity,
    plot_training_curves,
    show,
)
from keras_vit.visualize.positions import patch_position_table, position_embedding_similarity
from keras_vit.visualize.tokens import TokenLayout, run_intermediates

__all__ = [
    "TokenLayout",
    "activation_statistics",
    "attention_distance",
    "attention_maps",
    "attention_rollout",
    "attention_weights",
    "fuse_heads",
    "load_image",
    "mae_reconstruction",
    "mean_attention_distance",
    "normalize_maps",
    "patch_position_table",
    "plot_activation_statistics",
    "plot_mae_reconstruction",
    "plot_attention_heads",
    "plot_attention_rollout",
    "plot_mean_attention_distance",
    "plot_position_embedding_similarity",
    "plot_training_curves",
    "position_embedding_similarity",
    "prepare_images",
    "read_training_log",
    "rollout",
    "run_intermediates",
    "show",
    "upsample",
]
