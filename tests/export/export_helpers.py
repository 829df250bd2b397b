"""Shared helpers of the export tests: tiny models with real heads, a real photograph."""

import os

import keras
import numpy as np
import sklearn.datasets

import keras_vit

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
EXPORT_ARGS = dict(mean=MEAN, std=STD, crop_pct=0.9, class_names=CIFAR10_NAMES, top_k=3)
SAMPLE_IMAGES = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")


def tiny_model(distilled: bool = False, seed: int = 1) -> keras.Model:
    """ViT (or distilled DeiT) at 32 px, patch 8, width 32, depth 2; heads get random weights.

    The zoo zero-initialises heads, which would make every logit 0 and every
    comparison trivially true.
    """
    keras.utils.set_random_seed(seed)
    cls = keras_vit.DeiT if distilled else keras_vit.ViT
    model = cls(
        image_size=32,
        patch_size=8,
        hidden_dim=32,
        depth=2,
        num_heads=2,
        mlp_dim=64,
        num_classes=10,
        name="tiny_deit" if distilled else "tiny_vit",
    )
    rng = np.random.default_rng(seed)
    for name in ("head", "head_dist") if distilled else ("head",):
        layer = model.get_layer(name)
        layer.set_weights([rng.normal(0.0, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
    return model


def sample_image_bytes(name: str = "china.jpg") -> bytes:
    """A real photograph shipped with scikit-learn, as its original JPEG bytes."""
    with open(os.path.join(SAMPLE_IMAGES, name), "rb") as f:
        return f.read()


def rest(port: int, method: str, path: str, body=None, headers=None, timeout: float = 60.0):
    """One HTTP request to the local server; returns (status, parsed JSON body)."""
    import http.client
    import json

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        connection.request(method, path, body=data, headers=headers or {})
        response = connection.getresponse()
        payload = response.read()
        return response.status, json.loads(payload)
    finally:
        connection.close()
