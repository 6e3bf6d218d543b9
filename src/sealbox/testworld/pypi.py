"""A static package index in the PEP 503 "simple" layout, with one generated wheel.

The wheel ``sealbox_probe-1.0-py3-none-any.whl`` is written directly as a zip
file (no build backend needed). It installs one module, ``sealbox_probe``, whose
``__version__`` is ``"1.0"``. Every zip entry has a fixed timestamp, so the
wheel's bytes and digest are the same on every build.
"""

from __future__ import annotations

import base64
import hashlib
import html
import zipfile
from dataclasses import dataclass
from pathlib import Path

PROBE_PROJECT = "sealbox-probe"
PROBE_VERSION = "1.0"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class IndexedFile:
    """A distribution file in the index."""

    project: str
    filename: str
    sha256: str


def _record_digest(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def build_probe_wheel(directory: Path) -> Path:
    """Write the ``sealbox-probe`` 1.0 wheel into directory and return its path."""
    dist_info = f"sealbox_probe-{PROBE_VERSION}.dist-info"
    files: dict[str, bytes] = {
        "sealbox_probe/__init__.py": (
            b'"""Probe package served by the sealbox test world\'s package index."""\n\n'
            b'__version__ = "' + PROBE_VERSION.encode() + b'"\n'
        ),
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {PROBE_PROJECT}\nVersion: {PROBE_VERSION}\n"
            "Summary: Probe package served by the sealbox test world's package index\n"
        ).encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: sealbox.testworld\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record_lines = [f"{name},{_record_digest(data)},{len(data)}" for name, data in files.items()]
    record_lines.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record_lines) + "\n").encode()

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"sealbox_probe-{PROBE_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return path


def _page(title: str, links: list[tuple[str, str]]) -> bytes:
    anchors = "\n".join(f'    <a href="{html.escape(href)}">{html.escape(text)}</a><br/>' for href, text in links)
    return (
        "<!DOCTYPE html>\n<html>\n  <head><meta name=\"pypi:repository-version\" content=\"1.0\">"
        f"<title>{html.escape(title)}</title></head>\n  <body>\n{anchors}\n  </body>\n</html>\n"
    ).encode()


def build_index(root: Path) -> list[IndexedFile]:
    """Write the index under root (``simple/`` and ``packages/``) and return its files.

    ``/simple/`` lists the projects and ``/simple/<project>/`` links each file
    as ``../../packages/<file>#sha256=<hex>``.
    """
    wheel = build_probe_wheel(root / "packages")
    indexed = IndexedFile(PROBE_PROJECT, wheel.name, hashlib.sha256(wheel.read_bytes()).hexdigest())

    project_dir = root / "simple" / PROBE_PROJECT
    project_dir.mkdir(parents=True, exist_ok=True)
    (root / "simple" / "index.html").write_bytes(
        _page("Simple index", [(f"/simple/{PROBE_PROJECT}/", PROBE_PROJECT)])
    )
    (project_dir / "index.html").write_bytes(
        _page(
            f"Links for {PROBE_PROJECT}",
            [(f"../../packages/{indexed.filename}#sha256={indexed.sha256}", indexed.filename)],
        )
    )
    return [indexed]
