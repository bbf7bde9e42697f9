"""Why an upload is refused; ``status`` is the HTTP status the intake answers with (FTP maps them too)."""
from __future__ import annotations


class UploadError(Exception):
    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadUpload(UploadError):
    status = 400


class GrantNotFound(UploadError):
    """Unknown or expired upload URL."""
    status = 404


class GrantBusy(UploadError):
    """Another upload holds the URL right now."""
    status = 409


class GrantSpent(UploadError):
    """The one-time URL was used already."""
    status = 410


class FileTooLarge(UploadError):
    status = 413
