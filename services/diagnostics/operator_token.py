"""The bearer token of the file intake's operator routes (GET /files*, GET /firmware, PUT /firmware/*):
FILES_OPERATOR_TOKEN, or -- when it is not set -- one generated at the first start, kept in
``FILES_ROOT/.operator-token`` (mode 0600) and printed once. The routes are never open."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from csms.config import Settings

TOKEN_FILE = ".operator-token"
MIN_TOKEN_CHARS = 16


class TokenUnavailable(Exception):
    """The token file cannot be read or written (one line)."""


def operator_token(settings: Settings) -> tuple[str, bool, Path | None]:
    """(token, generated now, file it is kept in). Raises TokenUnavailable."""
    if settings.files_operator_token:
        return settings.files_operator_token, False, None
    path = Path(settings.files_root) / TOKEN_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            existing = path.read_text().strip()
            if len(existing) < MIN_TOKEN_CHARS:
                raise TokenUnavailable(f"{path} holds no usable token (delete it to generate a new one)") from None
            return existing, False, path
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        return token, True, path
    except OSError as exc:
        raise TokenUnavailable(f"operator token file {path}: {exc}") from None
