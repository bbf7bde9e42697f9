"""Diagnostics service: file intake (HTTP/FTP uploads) and firmware hosting."""
