"""The files HTTP server (aiohttp): charge points upload diagnostics (PUT/POST with a one-time URL) and
download firmware; operators list and download uploads and host firmware.

    PUT|POST /upload/{token}[/{filename}]   one upload per grant; raw body or multipart (first file part)
    GET      /files[?kind=&charge_point_id=&limit=]   operator: uploaded files, newest first
    GET      /files/{file_id}               operator: download an upload
    GET      /firmware                      operator: hosted firmware images (names, sizes, hashes)
    GET      /firmware/{name}               charge points download an image
    PUT      /firmware/{name}               operator: host (or replace) an image

The operator routes always need ``Authorization: Bearer <token>`` (FILES_OPERATOR_TOKEN, or the token
generated at the first start: operator_token.py); charge point routes never do: the upload URL itself is the
secret, and a firmware download is what UpdateFirmware / SignedUpdateFirmware hand a charge point -- a location,
nothing it could authenticate with (OCPP 1.6 has no credentials for it). No charge point needs the list of images,
so it is an operator route: the names of what is hosted are not handed to anyone who asks. ``Expect:
100-continue`` gets the final refusal before
any body is sent; a Content-Length over the limit is refused without reading the body.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from pathlib import Path

from aiohttp import ClientPayloadError, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BodyPartReader, content_disposition_filename, parse_content_disposition

from csms.contracts.api.diagnostics import DEFAULT_LIMIT, MAX_ID_LENGTH, MAX_LIMIT
from services.diagnostics.disk import safe_filename
from services.diagnostics.errors import BadUpload, FileTooLarge, UploadError
from services.diagnostics.grants import Grant
from services.diagnostics.intake import CHUNK_SIZE, FileIntake, Upload

log = logging.getLogger("csms.diagnostics.http")

# multipart framing (boundaries, part headers, small form fields) allowed on top of the
# file size when checking Content-Length up front; the file part itself is counted exactly.
MULTIPART_OVERHEAD = 64 * 1024

INTAKE_KEY = web.AppKey("files_intake", FileIntake)
_OPERATOR_TOKEN_KEY = web.AppKey("files_operator_token", str)


def _error(status: int, message: str, *, close: bool = False) -> web.Response:
    resp = web.json_response({"error": message}, status=status)
    if close:
        # the request body may be unread; do not keep the connection for another request
        resp.force_close()
    return resp


def _cd_filename(header: str | None) -> str | None:
    if not header:
        return None
    with contextlib.suppress(Exception):
        _disptype, params = parse_content_disposition(header)
        return content_disposition_filename(params, "filename")
    return None


def _is_multipart(request: web.BaseRequest) -> bool:
    return request.content_type.startswith("multipart/")


async def _precheck_upload(request: web.Request) -> Grant:
    intake = request.app[INTAKE_KEY]
    grant = await intake.check_grant(request.match_info["token"])
    length = request.content_length
    allowance = MULTIPART_OVERHEAD if _is_multipart(request) else 0
    if length is not None and length > grant.max_bytes + allowance:
        raise FileTooLarge(f"upload exceeds {grant.max_bytes} bytes")
    return grant


def _check_operator(request: web.Request) -> web.Response | None:
    expected = request.app[_OPERATOR_TOKEN_KEY]
    auth = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), expected.encode()):
        return None
    resp = _error(401, "operator authorization required", close=True)
    resp.headers[hdrs.WWW_AUTHENTICATE] = "Bearer"
    return resp


async def _continue(request: web.Request) -> None:
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0


async def _upload_expect(request: web.Request) -> web.StreamResponse | None:
    """Answer ``Expect: 100-continue`` with the final error if the upload would be refused."""
    if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text="Unknown Expect")
    try:
        await _precheck_upload(request)
    except UploadError as exc:
        return _error(exc.status, exc.message, close=True)
    await _continue(request)
    return None


async def _firmware_expect(request: web.Request) -> web.StreamResponse | None:
    if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text="Unknown Expect")
    denied = _check_operator(request)
    if denied is not None:
        return denied
    length = request.content_length
    if length is not None and length > request.app[INTAKE_KEY].firmware_max_bytes:
        return _error(413, "firmware too large", close=True)
    await _continue(request)
    return None


async def _stream_multipart(request: web.Request, upload: Upload, url_name: str | None) -> str | None:
    reader = await request.multipart()
    skipped = 0  # bytes of non-file form fields, bounded so a chunked body cannot stream forever
    while True:
        part = await reader.next()
        if part is None:
            raise BadUpload("multipart body has no file part")
        if not isinstance(part, BodyPartReader):
            raise BadUpload("nested multipart bodies are not supported")
        if part.filename is None:
            while chunk := await part.read_chunk(CHUNK_SIZE):
                skipped += len(chunk)
                if skipped > MULTIPART_OVERHEAD:
                    raise FileTooLarge("too much non-file form data")
            continue
        while True:
            chunk = await part.read_chunk(CHUNK_SIZE)
            if not chunk:
                break
            await upload.write(chunk)
        return part.filename or url_name


async def _handle_upload(request: web.Request) -> web.StreamResponse:
    intake = request.app[INTAKE_KEY]
    url_name = request.match_info.get("filename") or None
    try:
        await _precheck_upload(request)
        async with await intake.open_upload(request.match_info["token"]) as upload:
            if _is_multipart(request):
                filename = await _stream_multipart(request, upload, url_name)
            else:
                filename = url_name or _cd_filename(request.headers.get(hdrs.CONTENT_DISPOSITION))
                async for chunk in request.content.iter_chunked(CHUNK_SIZE):
                    await upload.write(chunk)
            record = await upload.commit(filename, protocol="http")
    except UploadError as exc:
        # the body may be (partly) unread: answer and drop the connection
        return _error(exc.status, exc.message, close=True)
    except ValueError as exc:  # malformed multipart framing
        return _error(400, f"malformed upload: {exc}", close=True)
    except (ConnectionError, asyncio.IncompleteReadError, ClientPayloadError, HttpProcessingError) as exc:
        # truncated body / client went away; the partial file is already gone
        log.info("HTTP upload interrupted: %r", exc)
        return _error(400, "upload interrupted", close=True)
    return web.json_response(record.model_dump(mode="json"), status=201)


async def _handle_list_files(request: web.Request) -> web.StreamResponse:
    denied = _check_operator(request)
    if denied is not None:
        return denied
    intake = request.app[INTAKE_KEY]
    kind = request.query.get("kind") or None
    cp = request.query.get("charge_point_id") or None
    limit = request.query.get("limit", str(DEFAULT_LIMIT))
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
        return _error(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
    if (kind and len(kind) > 32) or (cp and len(cp) > MAX_ID_LENGTH):
        return _error(400, "kind or charge_point_id too long")
    records = await intake.list_files(kind=kind, charge_point_id=cp, limit=int(limit))
    return web.json_response([r.model_dump(mode="json") for r in records])


async def _handle_get_file(request: web.Request) -> web.StreamResponse:
    denied = _check_operator(request)
    if denied is not None:
        return denied
    intake = request.app[INTAKE_KEY]
    record = await intake.get_file(request.match_info["file_id"])
    if record is None:
        return _error(404, "unknown file")
    return _download(intake.path_for(record), record.filename, record.sha256, "file missing on disk")


def _download(path: Path, filename: str, sha256: str, missing: str) -> web.StreamResponse:
    if not path.is_file():
        return _error(404, missing)
    return web.FileResponse(path, headers={
        hdrs.CONTENT_TYPE: "application/octet-stream",
        hdrs.CONTENT_DISPOSITION: f'attachment; filename="{filename}"',
        "X-Checksum-Sha256": sha256,
    })


async def _handle_list_firmware(request: web.Request) -> web.StreamResponse:
    denied = _check_operator(request)
    if denied is not None:
        return denied
    records = await request.app[INTAKE_KEY].list_firmware()
    return web.json_response([r.model_dump(mode="json") for r in records])


async def _handle_get_firmware(request: web.Request) -> web.StreamResponse:
    intake = request.app[INTAKE_KEY]
    name = request.match_info["name"]
    record = await intake.get_firmware(name)
    if record is None:
        return _error(404, "unknown firmware")
    return _download(intake.firmware_path(record.name), record.name, record.sha256, "firmware missing on disk")


async def _handle_put_firmware(request: web.Request) -> web.StreamResponse:
    denied = _check_operator(request)
    if denied is not None:
        return denied
    intake = request.app[INTAKE_KEY]
    name = request.match_info["name"]
    if not safe_filename(name, default=""):
        return _error(400, "invalid firmware name")
    length = request.content_length
    if length is not None and length > intake.firmware_max_bytes:
        return _error(413, "firmware too large", close=True)
    try:
        record = await intake.add_firmware(name, request.content.iter_chunked(CHUNK_SIZE))
    except UploadError as exc:
        return _error(exc.status, exc.message, close=True)
    return web.json_response(record.model_dump(mode="json"), status=201)


def build_http_app(intake: FileIntake, *, operator_token: str) -> web.Application:
    """aiohttp app for uploads (charge points), downloads and firmware hosting.

    ``GET /files*``, ``GET /firmware`` and ``PUT /firmware/*`` require ``Authorization: Bearer <operator_token>``
    (never open); charge point routes (uploads with a grant token, firmware downloads) never do.
    """
    if not operator_token:
        raise ValueError("the operator routes need a token")
    app = web.Application()
    app[INTAKE_KEY] = intake
    app[_OPERATOR_TOKEN_KEY] = operator_token
    for method in ("PUT", "POST"):
        for path in ("/upload/{token}", "/upload/{token}/", "/upload/{token}/{filename:.+}"):
            app.router.add_route(method, path, _handle_upload, expect_handler=_upload_expect)
    app.router.add_get("/files", _handle_list_files)
    app.router.add_get("/files/{file_id}", _handle_get_file)
    app.router.add_get("/firmware", _handle_list_firmware)
    app.router.add_get("/firmware/{name}", _handle_get_firmware)
    app.router.add_route("PUT", "/firmware/{name}", _handle_put_firmware, expect_handler=_firmware_expect)
    return app

