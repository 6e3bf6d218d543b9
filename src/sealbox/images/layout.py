"""The shape of a resolved image, shared by the image resolvers and the runtime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImageLayout:
    """A resolved image.

    `root_lower` is the read-only lower directory of the sandbox's root overlay.
    `overlays` lists (path in the sandbox, host directory) pairs that are mounted
    as overlays of their own on top of the root, each with a private upper layer.
    `hidden` lists paths in the sandbox that a whiteout in the upper layer hides.
    """

    reference: str
    root_lower: Path
    overlays: tuple[tuple[str, Path], ...]
    hidden: tuple[str, ...] = ()
