"""Images: the read-only root filesystems sandboxes start from.

`resolve_image` turns a reference into an ImageLayout: the lower directory of the
sandbox's root overlay plus any host directories that get an overlay of their
own. The runtime gives every sandbox its own writable upper layers, so an image
is never modified.
"""

from __future__ import annotations

from pathlib import Path

from sealbox.errors import ImageNotFoundError
from sealbox.images.layout import ImageLayout
from sealbox.images.host import host_image
from sealbox.store import Paths

__all__ = ["ImageLayout", "resolve_image"]


def resolve_image(reference: str, paths: Paths) -> ImageLayout:
    """Resolve 'host' or the path of a root filesystem directory."""
    if reference == "host":
        return host_image(paths)
    if reference.startswith(("/", "./", "../")):
        root = Path(reference).resolve()
        if not root.is_dir():
            raise ImageNotFoundError(reference, "no such directory")
        if not any((root / name).exists() for name in ("bin", "usr", "etc")):
            raise ImageNotFoundError(reference, "the directory has no bin, usr or etc, so it is not a root filesystem")
        return ImageLayout(reference=str(root), root_lower=root, overlays=())
    raise ImageNotFoundError(reference, "registry images are not supported yet")
