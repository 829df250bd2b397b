"""Side-by-side benchmarks of keras_vit against keras-hub and timm (`python -m benchmarks.run`).

Not part of the installed package: the peers live in the `bench` extra.
"""
