"""Keras networks of the two seed papers: the cascade's U-Nets and the modified ENet."""

from .enet import build_enet
from .unet import build_unet

__all__ = ["build_enet", "build_unet"]
