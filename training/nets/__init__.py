"""Keras networks of the two seed papers: the cascade's U-Nets and the modified ENet."""

from training.nets.enet import build_enet
from training.nets.unet import build_unet

__all__ = ["build_enet", "build_unet"]
