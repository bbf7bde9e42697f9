"""Where uploaded bytes live: the files root (FILES_ROOT) and safe names inside it.

    <root>/<kind>/<safe cp id>/<file_id>/<safe file name>   stored uploads
    <root>/firmware/<safe name>                             firmware images
    <root>/.tmp/                                            partial HTTP uploads and firmware
    <root>/.ftp/<server id>/<session>/                      per-login FTP jails

Every path is resolved and checked to stay inside the root; names from outside go through
:func:`safe_filename` first.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from services.diagnostics.errors import BadUpload

DEFAULT_FILENAME = "upload.bin"
MAX_FILENAME_LENGTH = 128
FIRMWARE_DIR = "firmware"

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str | None, default: str = DEFAULT_FILENAME, max_length: int = MAX_FILENAME_LENGTH) -> str:
    """Reduce a client supplied file name to a harmless basename.

    Directories (``/`` and ``\\``) are stripped, every run of characters outside
    ``[A-Za-z0-9._-]`` becomes ``_``, leading dots are removed (no hidden files, no
    ``.``/``..``) and the result is cut to ``max_length`` keeping a short extension.
    Names without a single letter or digit fall back to ``default``.
    """
    if not name:
        return default
    base = str(name).replace("\\", "/").rstrip("/").split("/")[-1]
    base = _UNSAFE_CHARS.sub("_", base).lstrip(".")
    if len(base) > max_length:
        stem, dot, ext = base.rpartition(".")
        if dot and stem and 0 < len(ext) <= 16:
            base = stem[: max_length - len(ext) - 1] + "." + ext
        else:
            base = base[:max_length]
    if not any(ch.isalnum() for ch in base):
        return default
    return base


def unlink(path: str | os.PathLike[str] | None) -> None:
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


class FilesRoot:
    """The directory tree under FILES_ROOT (created on first use)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.realpath(root))
        self.tmp_dir = self.root / ".tmp"
        self.ftp_dir = self.root / ".ftp"
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def under(self, *parts: str) -> Path:
        path = Path(os.path.realpath(os.path.join(self.root, *parts)))
        if path == self.root or self.root not in path.parents:
            raise BadUpload("path escapes the files root")
        return path

    def upload_path(self, kind: str, charge_point_id: str, file_id: str, filename: str) -> Path:
        return self.under(kind, safe_filename(charge_point_id, default="unknown"), file_id, filename)

    def firmware_path(self, name: str) -> Path:
        safe = safe_filename(name, default="")
        if not safe or safe != name:
            raise ValueError(f"invalid firmware name {name!r}")
        return self.under(FIRMWARE_DIR, safe)

    def temp_file(self, prefix: str) -> tuple[int, Path]:
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=self.tmp_dir)
        return fd, Path(path)

    def place(self, source: str | os.PathLike[str], final: Path) -> None:
        """Move a finished upload to its final path (same file system: atomic)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, final)

    def discard(self, final: Path) -> None:
        """Remove a stored file and its now empty directories (never the root)."""
        unlink(final)
        path = final.parent
        with contextlib.suppress(OSError):
            while path != self.root and self.root in path.parents:
                path.rmdir()
                path = path.parent
