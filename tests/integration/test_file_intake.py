"""Integration tests for the diagnostics file intake (real Redis and PostgreSQL, real HTTP/FTP sockets)."""
from __future__ import annotations

import asyncio
import ftplib
import hashlib
import io
import os
import ssl
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
import redis.asyncio as redis_async
from yarl import URL

from csms import pki
from csms.config import Settings
from csms.db import Database
from services.diagnostics.disk import safe_filename
from services.diagnostics.errors import GrantBusy, GrantNotFound, GrantSpent
from services.diagnostics.grants import RedisGrants
from services.diagnostics.http_server import build_http_app
from services.diagnostics.intake import FileIntake
from services.diagnostics.records import FileRecord, StoredFile
from services.diagnostics.servers import FileServers, run_file_servers
from services.diagnostics.store import PostgresStore
from tests.support import pki as test_pki
from tests.support.system import create_schema, drop_schema, make_settings

MAX_BYTES = 256 * 1024
TOKEN = "operator-token-of-the-test"


# --------------------------------------------------------------------------- fixtures


@dataclass
class Stored:
    records: list[FileRecord] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def add(self, stored: StoredFile) -> None:
        self.records.append(stored.file)
        self.changed.set()

    async def wait_for(self, file_id: str, timeout: float = 5.0) -> FileRecord:
        async def _wait() -> FileRecord:
            while True:
                for record in self.records:
                    if record.file_id == file_id:
                        return record
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(_wait(), timeout)


@dataclass
class Env:
    servers: FileServers
    store: FileIntake
    stored: Stored
    http: aiohttp.ClientSession
    settings: Settings
    redis: redis_async.Redis

    @property
    def root(self) -> Path:
        return Path(self.settings.files_root)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.servers.http_port}{path}"


@pytest.fixture
async def redis_client(infrastructure):
    client = redis_async.Redis.from_url(infrastructure.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def files_settings(infrastructure, tmp_path: Path):
    """A namespace in Redis and a migrated schema in PostgreSQL of the test's own."""
    settings = make_settings(infrastructure, files_root=str(tmp_path / "files"), upload_max_bytes=MAX_BYTES,
                             upload_ttl=60)
    await create_schema(settings)
    yield settings
    await drop_schema(settings)


@pytest.fixture
async def database(files_settings: Settings):
    db = await Database(files_settings).connect()
    yield db
    await db.close()


def make_intake(settings: Settings, redis, database: Database, **options) -> FileIntake:
    return FileIntake(settings, RedisGrants(settings, redis), PostgresStore(database.pool), **options)


@pytest.fixture
async def env(files_settings: Settings, redis_client: redis_async.Redis, database: Database):
    stored = Stored()
    intake = make_intake(files_settings, redis_client, database, on_stored=stored.add)
    try:
        async with run_file_servers(intake, operator_token=TOKEN, ftp_options={"auth_failed_delay": 0.05}) as servers:
            # (operator routes need the token; charge point routes ignore it)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                                             headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                yield Env(servers, servers.intake, stored, http, files_settings, redis_client)
    finally:
        keys = [k async for k in redis_client.scan_iter(match=f"{files_settings.namespace}:*", count=500)]
        if keys:
            await redis_client.delete(*keys)


def files_on_disk(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def slow_body(data: bytes, chunk: int, delay: float):
    for start in range(0, len(data), chunk):
        yield data[start:start + chunk]
        await asyncio.sleep(delay)


# --------------------------------------------------------------------------- HTTP


async def test_grant_urls(env: Env):
    grant = await env.store.create_upload("CP-1", request_id="req-1")
    assert grant.http_url == f"http://127.0.0.1:{env.servers.http_port}/upload/{grant.token}/"
    ftp = urlsplit(grant.ftp_url)
    assert ftp.scheme == "ftp" and ftp.hostname == "127.0.0.1" and ftp.port == env.servers.ftp_port
    assert ftp.username and ftp.password and ftp.path == "/"
    other = await env.store.create_upload("CP-1", request_id="req-1")
    assert other.token != grant.token and urlsplit(other.ftp_url).password != ftp.password
    assert grant.expires_at.tzinfo is not None and grant.max_bytes == MAX_BYTES
    assert await env.store.grant_status(grant.token) == "open"
    with pytest.raises(ValueError):
        await env.store.create_upload("CP-1", request_id="x", kind="../evil")


async def test_http_put_roundtrip(env: Env):
    grant = await env.store.create_upload("CP-1", request_id="req-1")
    data = os.urandom(100_000)
    async with env.http.put(grant.http_url + "diag-2024.log", data=data) as resp:
        assert resp.status == 201, await resp.text()
        body = await resp.json()
    record = FileRecord.model_validate(body)
    assert record.filename == "diag-2024.log"
    assert record.size == len(data) and record.sha256 == sha(data)
    assert record.charge_point_id == "CP-1" and record.request_id == "req-1"
    assert record.kind == "diagnostics" and record.protocol == "http"
    assert record.uploaded_at.tzinfo is not None and body["uploaded_at"].endswith("Z")

    path = env.store.path_for(record)
    assert path == env.root.resolve() / "diagnostics" / "CP-1" / record.file_id / "diag-2024.log"
    assert path.read_bytes() == data
    assert files_on_disk(env.root) == [path]

    async with env.http.get(env.url(f"/files/{record.file_id}")) as resp:
        assert resp.status == 200
        assert 'filename="diag-2024.log"' in resp.headers["Content-Disposition"]
        downloaded = await resp.read()
    assert sha(downloaded) == record.sha256 and downloaded == data

    assert await env.store.get_file(record.file_id) == record
    assert [r.file_id for r in env.stored.records] == [record.file_id]
    assert env.stored.records[0] == record
    assert await env.store.grant_status(grant.token) == "spent"


async def test_http_post_multipart_roundtrip(env: Env):
    grant = await env.store.create_upload("CP-2", request_id="42")
    data = b"line\r\n" * 5000 + os.urandom(1000)
    form = aiohttp.FormData()
    form.add_field("note", "hello")
    form.add_field("file", data, filename="diagnostics.zip", content_type="application/zip")
    async with env.http.post(grant.http_url, data=form) as resp:
        assert resp.status == 201, await resp.text()
        record = FileRecord.model_validate(await resp.json())
    assert record.filename == "diagnostics.zip" and record.size == len(data) and record.sha256 == sha(data)
    assert env.store.path_for(record).read_bytes() == data
    async with env.http.get(env.url(f"/files/{record.file_id}")) as resp:
        assert resp.status == 200
        assert sha(await resp.read()) == sha(data)
    assert env.stored.records == [record]


async def test_post_raw_body_and_default_names(env: Env):
    grant = await env.store.create_upload("CP-3", request_id="1")
    async with env.http.post(grant.http_url + "raw.txt", data=b"raw body") as resp:
        assert resp.status == 201
        assert (await resp.json())["filename"] == "raw.txt"

    grant = await env.store.create_upload("CP-3", request_id="2")
    headers = {"Content-Disposition": 'attachment; filename="cp-diag.tar.gz"'}
    async with env.http.put(grant.http_url.rstrip("/"), data=b"x" * 10, headers=headers) as resp:
        assert resp.status == 201
        assert (await resp.json())["filename"] == "cp-diag.tar.gz"

    grant = await env.store.create_upload("CP-3", request_id="3")
    async with env.http.put(grant.http_url, data=b"y" * 10) as resp:
        assert resp.status == 201
        assert (await resp.json())["filename"] == "upload.bin"

    grant = await env.store.create_upload("CP-3", request_id="4")
    async with env.http.put(grant.http_url + "empty.log", data=b"") as resp:
        assert resp.status == 400
        assert "error" in await resp.json()
    assert await env.store.grant_status(grant.token) == "open"
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("note", "no file here")
    form.add_field("other", "still none")
    async with env.http.post(grant.http_url, data=form) as resp:
        assert resp.status == 400
        assert "no file part" in (await resp.json())["error"]
    assert await env.store.grant_status(grant.token) == "open"
    assert len(files_on_disk(env.root)) == 3


async def test_one_time_url(env: Env):
    grant = await env.store.create_upload("CP-1", request_id="r")
    async with env.http.put(grant.http_url + "a.log", data=b"first") as resp:
        assert resp.status == 201
    async with env.http.put(grant.http_url + "b.log", data=b"second") as resp:
        assert resp.status == 410
        assert (await resp.json())["error"]
    form = aiohttp.FormData()
    form.add_field("file", b"third", filename="c.log")
    async with env.http.post(grant.http_url, data=form) as resp:
        assert resp.status == 410
    records = await env.store.list_files()
    assert [r.filename for r in records] == ["a.log"]
    assert len(files_on_disk(env.root)) == 1
    assert env.store.path_for(records[0]).read_bytes() == b"first"


async def test_concurrent_double_use_only_one_wins(env: Env):
    grant = await env.store.create_upload("CP-1", request_id="r")
    payloads = [os.urandom(40_000), os.urandom(40_000)]

    async def upload(data: bytes, name: str) -> tuple[int, dict]:
        async with env.http.put(grant.http_url + name, data=slow_body(data, 4000, 0.02)) as resp:
            return resp.status, await resp.json()

    results = await asyncio.gather(upload(payloads[0], "one.log"), upload(payloads[1], "two.log"))
    statuses = sorted(status for status, _ in results)
    assert statuses[0] == 201 and statuses[1] in (409, 410), results
    winner = next(body for status, body in results if status == 201)
    loser = next(body for status, body in results if status != 201)
    assert "error" in loser
    records = await env.store.list_files()
    assert [r.file_id for r in records] == [winner["file_id"]]
    on_disk = files_on_disk(env.root)
    assert len(on_disk) == 1
    assert sha(on_disk[0].read_bytes()) == winner["sha256"]
    assert winner["sha256"] in {sha(p) for p in payloads}
    # and afterwards the URL is spent
    async with env.http.put(grant.http_url + "three.log", data=b"z") as resp:
        assert resp.status == 410


async def test_claim_is_atomic(env: Env):
    grant = await env.store.create_upload("CP-1", request_id="r")
    attempts = await asyncio.gather(*(env.store.open_upload(grant.token) for _ in range(10)), return_exceptions=True)
    winners = [a for a in attempts if not isinstance(a, BaseException)]
    assert len(winners) == 1, attempts
    assert all(isinstance(a, GrantBusy) for a in attempts if a is not winners[0])
    assert await env.store.grant_status(grant.token) == "uploading"
    # while one upload holds the grant, HTTP gets 409 right away
    async with env.http.put(grant.http_url + "x.log", data=b"x") as resp:
        assert resp.status == 409
    await winners[0].abort()  # failed attempt: grant usable again
    async with await env.store.open_upload(grant.token) as upload:
        await upload.write(b"hello")
        record = await upload.commit("hello.txt")
    assert env.store.path_for(record).read_bytes() == b"hello"
    with pytest.raises(GrantSpent):
        await env.store.open_upload(grant.token)
    with pytest.raises(GrantNotFound):
        await env.store.open_upload("B" * 32)


async def test_unknown_and_expired_tokens(env: Env):
    unknown = "A" * 32
    async with env.http.put(env.url(f"/upload/{unknown}/x.log"), data=b"data") as resp:
        assert resp.status == 404
        assert "error" in await resp.json()
    async with env.http.post(env.url("/upload/short/"), data=b"data") as resp:
        assert resp.status == 404

    grant = await env.store.create_upload("CP-1", request_id="r", ttl=1)
    await asyncio.sleep(1.1)
    async with env.http.put(grant.http_url + "late.log", data=b"data") as resp:
        assert resp.status == 404
    assert await env.store.grant_status(grant.token) is None
    assert files_on_disk(env.root) == []


async def test_size_limit_content_length(env: Env):
    grant = await env.store.create_upload("CP-1", request_id="r", max_bytes=1000)
    async with env.http.put(grant.http_url + "big.log", data=b"x" * 5000) as resp:
        assert resp.status == 413
        assert "error" in await resp.json()
    # Expect: 100-continue gets the final answer before any body is sent
    async with env.http.put(grant.http_url + "big.log", data=b"x" * 5000, expect100=True) as resp:
        assert resp.status == 413
    assert files_on_disk(env.root) == []
    assert await env.store.grant_status(grant.token) == "open"

    exact = b"y" * 1000
    async with env.http.put(grant.http_url + "ok.log", data=exact, expect100=True) as resp:
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["size"] == 1000
    assert [p.read_bytes() for p in files_on_disk(env.root)] == [exact]


async def _raw_request(port: int, head: str, body: bytes = b"", timeout: float = 3.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(4096), timeout)
    finally:
        writer.close()


async def test_size_limit_rejected_before_body(env: Env):
    """Content-Length over the limit is refused without waiting for (or reading) the body."""
    grant = await env.store.create_upload("CP-1", request_id="r", max_bytes=1000)
    path = urlsplit(grant.http_url).path + "big.log"
    port = env.servers.http_port
    head = f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n"
    answer = await _raw_request(port, head + "\r\n", b"only a few bytes")
    assert answer.startswith(b"HTTP/1.1 413"), answer
    answer = await _raw_request(port, head + "Expect: 100-continue\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413") and b"100 Continue" not in answer, answer
    # an acceptable size gets the interim 100 Continue
    ok_head = f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"
    answer = await _raw_request(port, ok_head)
    assert answer.startswith(b"HTTP/1.1 100 Continue"), answer
    await asyncio.sleep(0.1)
    assert files_on_disk(env.root) == []
    assert await env.store.grant_status(grant.token) == "open"


async def test_interrupted_upload_releases_grant(env: Env):
    grant = await env.store.create_upload("CP-1", request_id="r", max_bytes=10_000)
    path = urlsplit(grant.http_url).path + "cut.log"
    reader, writer = await asyncio.open_connection("127.0.0.1", env.servers.http_port)
    writer.write(f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".encode() + b"p" * 2000)
    await writer.drain()
    for _ in range(100):
        if await env.store.grant_status(grant.token) == "uploading":
            break
        await asyncio.sleep(0.02)
    assert await env.store.grant_status(grant.token) == "uploading"
    assert len(files_on_disk(env.root)) == 1  # the partial temp file
    writer.close()  # connection dropped mid-body
    for _ in range(100):
        if await env.store.grant_status(grant.token) == "open":
            break
        await asyncio.sleep(0.02)
    assert await env.store.grant_status(grant.token) == "open"
    assert files_on_disk(env.root) == []
    async with env.http.put(grant.http_url + "retry.log", data=b"r" * 5000) as resp:
        assert resp.status == 201


async def test_size_limit_streaming(env: Env):
    grant = await env.store.create_upload("CP-1", request_id="r", max_bytes=10_000)
    status = None
    try:
        async with env.http.put(grant.http_url + "stream.log", data=slow_body(b"z" * 40_000, 2000, 0.005)) as resp:
            status = resp.status
            assert (await resp.json())["error"]
    except aiohttp.ClientError:
        # the server may close the connection while the client is still sending
        pass
    assert status in (413, None)
    await asyncio.sleep(0.1)
    assert files_on_disk(env.root) == []
    assert await env.store.grant_status(grant.token) == "open"  # claim released

    # multipart: only the file part counts, and it is over the limit too
    form = aiohttp.FormData()
    form.add_field("file", b"q" * 20_000, filename="f.log")
    async with env.http.post(grant.http_url, data=form) as resp:
        assert resp.status == 413
    assert files_on_disk(env.root) == []

    # a chunked upload within the limit still works afterwards
    small = os.urandom(9_000)
    async with env.http.put(grant.http_url + "small.log", data=slow_body(small, 1000, 0)) as resp:
        assert resp.status == 201, await resp.text()
        record = FileRecord.model_validate(await resp.json())
    assert record.sha256 == sha(small)
    assert files_on_disk(env.root) == [env.store.path_for(record)]


async def test_chunked_413_status_is_reported(env: Env):
    """With a body that fits into socket buffers the client must see the 413 itself."""
    grant = await env.store.create_upload("CP-1", request_id="r", max_bytes=3000)

    async def body():
        for _ in range(4):
            yield b"w" * 1000

    async with env.http.put(grant.http_url + "s.log", data=body()) as resp:
        assert resp.status == 413
    assert files_on_disk(env.root) == []
    assert await env.store.grant_status(grant.token) == "open"


def test_safe_filename_unit():
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("..\\..\\x") == "x"
    assert safe_filename("%2e%2e%2f") == "_2e_2e_2f"
    assert safe_filename("../") == "upload.bin"
    assert safe_filename("..") == "upload.bin"
    assert safe_filename(".hidden") == "hidden"
    assert safe_filename("a b;c$.log") == "a_b_c_.log"
    assert safe_filename(None) == "upload.bin"
    long = safe_filename("n" * 500 + ".tar")
    assert len(long) == 128 and long.endswith(".tar")


@pytest.mark.parametrize(
    "how, raw",
    [
        ("url", "..%2F..%2Fetc%2Fpasswd"),
        ("url", "..%5C..%5Cx"),
        ("url", "%252e%252e%252f"),
        ("url", "..%2F..%2F..%2F..%2Ftmp%2Fevil"),
        ("disposition", "../../etc/passwd"),
        ("disposition", "..\\..\\x"),
        ("multipart", "../../etc/passwd"),
        ("multipart", "..\\..\\x"),
        ("multipart", "%2e%2e%2f"),
    ],
)
async def test_path_traversal_is_neutralised(env: Env, tmp_path: Path, how: str, raw: str):
    grant = await env.store.create_upload("../../CP-evil", request_id="r")
    data = os.urandom(500)
    if how == "url":
        url = URL(f"{grant.http_url}{raw}", encoded=True)
        resp = await env.http.put(url, data=data)
    elif how == "disposition":
        resp = await env.http.put(grant.http_url, data=data,
                                  headers={"Content-Disposition": f'attachment; filename="{raw}"'})
    else:
        form = aiohttp.FormData()
        form.add_field("file", data, filename=raw)
        resp = await env.http.post(grant.http_url, data=form)
    async with resp:
        assert resp.status == 201, await resp.text()
        record = FileRecord.model_validate(await resp.json())
    assert record.filename == safe_filename(record.filename)
    assert "/" not in record.filename and "\\" not in record.filename and not record.filename.startswith(".")
    path = env.store.path_for(record)
    root = env.root.resolve()
    assert root in path.parents and path.read_bytes() == data
    assert path.relative_to(root).parts[:2] == ("diagnostics", "CP-evil")
    assert files_on_disk(env.root) == [path]
    # nothing escaped next to the root
    assert sorted(p.name for p in tmp_path.iterdir()) == ["files"]


async def test_listing_filters(env: Env):
    async def put(cp: str, kind: str, name: str) -> str:
        grant = await env.store.create_upload(cp, request_id=name, kind=kind)
        async with env.http.put(grant.http_url + name, data=name.encode()) as resp:
            assert resp.status == 201
            return (await resp.json())["file_id"]

    a1 = await put("CP-A", "diagnostics", "a1.log")
    b1 = await put("CP-B", "diagnostics", "b1.log")
    a2 = await put("CP-A", "logs", "a2.log")

    async def listing(**params: str) -> set[str]:
        async with env.http.get(env.url("/files"), params=params) as resp:
            assert resp.status == 200
            return {r["file_id"] for r in await resp.json()}

    assert await listing() == {a1, b1, a2}
    assert await listing(kind="diagnostics") == {a1, b1}
    assert await listing(kind="logs") == {a2}
    assert await listing(charge_point_id="CP-A") == {a1, a2}
    assert await listing(kind="diagnostics", charge_point_id="CP-A") == {a1}
    assert await listing(charge_point_id="CP-unknown") == set()
    assert len(await listing(limit="2")) == 2
    for bad in ("0", "1001", "x"):
        async with env.http.get(env.url("/files"), params={"limit": bad}) as resp:
            assert resp.status == 400
    assert [r.file_id for r in await env.store.list_files()] == [a2, b1, a1]  # newest first
    assert {r.file_id for r in await env.store.list_files(kind="logs", charge_point_id="CP-B")} == set()

    async with env.http.get(env.url(f"/files/{uuid.uuid4().hex}")) as resp:
        assert resp.status == 404
        assert "error" in await resp.json()
    async with env.http.get(env.url("/files/..%2F..%2Fetc")) as resp:
        assert resp.status == 404


async def test_firmware_hosting(env: Env):
    image = os.urandom(50_000)
    async with env.http.put(env.url("/firmware/fw-1.2.3.bin"), data=image) as resp:
        assert resp.status == 201, await resp.text()
        record = await resp.json()
    assert record["name"] == "fw-1.2.3.bin" and record["sha256"] == sha(image) and record["size"] == len(image)
    assert record["url"] == env.store.firmware_url("fw-1.2.3.bin") == env.url("/firmware/fw-1.2.3.bin")

    async def chunks():
        yield b"part1-"
        yield b"part2"

    second = await env.store.add_firmware("../other.img", chunks())
    assert second.name == "other.img" and second.size == 11

    async with env.http.get(env.url("/firmware")) as resp:
        assert resp.status == 200
        assert [r["name"] for r in await resp.json()] == ["fw-1.2.3.bin", "other.img"]
    assert [r.name for r in await env.store.list_firmware()] == ["fw-1.2.3.bin", "other.img"]

    async with env.http.get(record["url"]) as resp:
        assert resp.status == 200
        assert sha(await resp.read()) == sha(image)
    async with env.http.get(env.url("/firmware/other.img")) as resp:
        assert await resp.read() == b"part1-part2"
    for bad in ("/firmware/missing.bin", "/firmware/..%2Fother.img", "/firmware/.hidden"):
        async with env.http.get(env.url(bad)) as resp:
            assert resp.status == 404, bad

    async with env.http.put(env.url("/firmware/huge.bin"), data=b"h" * (MAX_BYTES + 1)) as resp:
        assert resp.status == 413
    assert not (env.root / "firmware" / "huge.bin").exists()
    assert (env.root / "firmware" / "fw-1.2.3.bin").read_bytes() == image
    assert sorted(p.name for p in files_on_disk(env.root)) == ["fw-1.2.3.bin", "other.img"]


async def test_operator_token_protects_operator_routes(env: Env):
    with pytest.raises(ValueError):
        build_http_app(env.store, operator_token="")  # never open
    app = build_http_app(env.store, operator_token="s3cret")
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        for auth in ({"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0"}):
            async with env.http.put(f"{base}/firmware/a.bin", data=b"a", headers=auth) as resp:
                assert resp.status == 401
            async with env.http.get(f"{base}/files", headers=auth) as resp:
                assert resp.status == 401
            async with env.http.get(f"{base}/firmware", headers=auth) as resp:  # names and hashes of the images
                assert resp.status == 401
        for route in ("/files", "/firmware"):
            async with aiohttp.ClientSession() as anonymous, anonymous.get(f"{base}{route}") as resp:
                assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
        auth = {"Authorization": "Bearer s3cret"}
        async with env.http.put(f"{base}/firmware/a.bin", data=b"a", headers=auth) as resp:
            assert resp.status == 201
        async with env.http.get(f"{base}/files", headers=auth) as resp:
            assert resp.status == 200
        async with env.http.get(f"{base}/firmware", headers=auth) as resp:
            assert resp.status == 200 and [r["name"] for r in await resp.json()] == ["a.bin"]
        async with aiohttp.ClientSession() as anonymous, anonymous.get(f"{base}/firmware/a.bin") as resp:
            # charge points need no token
            assert resp.status == 200 and await resp.read() == b"a"
        grant = await env.store.create_upload("CP-1", request_id="r")
        async with env.http.put(f"{base}/upload/{grant.token}/x.log", data=b"x") as resp:
            assert resp.status == 201
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- FTP


def _ftp_login(ftp_url: str, user: str | None = None) -> ftplib.FTP:
    parts = urlsplit(ftp_url)
    ftp = ftplib.FTP()
    ftp.connect(parts.hostname, parts.port, timeout=5)
    ftp.login(user or parts.username, parts.password)
    return ftp


def _ftp_store(ftp_url: str, name: str, data: bytes) -> str:
    ftp = _ftp_login(ftp_url)
    try:
        return ftp.storbinary(f"STOR {name}", io.BytesIO(data))
    finally:
        ftp.close()


async def test_ftp_upload_once(env: Env):
    grant = await env.store.create_upload("CP-F", request_id="ftp-1")
    data = os.urandom(120_000)
    reply = await asyncio.to_thread(_ftp_store, grant.ftp_url, "diag-ftp.tar.gz", data)
    assert reply.startswith("226")

    records = await env.store.list_files(charge_point_id="CP-F")
    assert len(records) == 1
    record = records[0]
    assert record.protocol == "ftp" and record.filename == "diag-ftp.tar.gz"
    assert record.size == len(data) and record.sha256 == sha(data) and record.request_id == "ftp-1"
    assert env.store.path_for(record).read_bytes() == data
    notified = await env.stored.wait_for(record.file_id)
    assert notified == record

    async with env.http.get(env.url(f"/files/{record.file_id}")) as resp:
        assert sha(await resp.read()) == sha(data)

    # spent: the same credentials are refused, and the HTTP side of the grant is gone too
    with pytest.raises(ftplib.error_perm, match="530"):
        await asyncio.to_thread(_ftp_login, grant.ftp_url)
    async with env.http.put(grant.http_url + "again.log", data=b"x") as resp:
        assert resp.status == 410
    await asyncio.sleep(0.2)
    assert files_on_disk(env.root) == [env.store.path_for(record)]  # session jail removed


async def test_ftp_refuses_bad_credentials_and_other_commands(env: Env):
    grant = await env.store.create_upload("CP-F", request_id="r")
    parts = urlsplit(grant.ftp_url)
    with pytest.raises(ftplib.error_perm, match="530"):
        await asyncio.to_thread(_ftp_login, grant.ftp_url.replace(parts.password, "wrong" * 4))
    with pytest.raises(ftplib.error_perm, match="530"):
        await asyncio.to_thread(_ftp_login, grant.ftp_url, "anonymous")

    def session() -> list[str]:
        ftp = _ftp_login(grant.ftp_url)
        results = []
        try:
            for cmd in ("RETR ../../../etc/passwd", "DELE x", "MKD d", "RNFR x", "STOU", "APPE x.log",
                        "SITE CHMOD 777 x"):
                try:
                    if cmd.startswith(("RETR", "STOU", "APPE")):
                        ftp.voidcmd("TYPE I")
                        conn = ftp.transfercmd(cmd)
                        conn.close()
                        results.append("opened")
                    else:
                        results.append(ftp.sendcmd(cmd))
                except ftplib.all_errors as exc:
                    results.append(str(exc)[:3])
            results.append(str(ftp.nlst()))
        finally:
            ftp.close()
        return results

    results = await asyncio.to_thread(session)
    assert results[:7] == ["550", "550", "550", "550", "502", "550", "550"], results
    assert results[7] == "[]"  # the jail is empty: nothing of other uploads is visible
    assert await env.store.grant_status(grant.token) == "open"


async def test_ftp_oversize_aborted_then_retry(env: Env):
    grant = await env.store.create_upload("CP-F", request_id="r", max_bytes=20_000)
    with pytest.raises((ftplib.Error, OSError)):
        await asyncio.to_thread(_ftp_store, grant.ftp_url, "big.bin", os.urandom(2_000_000))
    for _ in range(50):  # the server finishes cleaning up asynchronously
        if not files_on_disk(env.root) and await env.store.grant_status(grant.token) == "open":
            break
        await asyncio.sleep(0.05)
    assert files_on_disk(env.root) == []
    assert await env.store.grant_status(grant.token) == "open"
    assert await env.store.list_files() == []

    small = os.urandom(19_000)
    reply = await asyncio.to_thread(_ftp_store, grant.ftp_url, "small.bin", small)
    assert reply.startswith("226")
    [record] = await env.store.list_files()
    assert record.sha256 == sha(small) and record.protocol == "ftp"
    assert (await env.stored.wait_for(record.file_id)).size == len(small)


async def test_ftp_and_http_share_one_time_grant(env: Env):
    grant = await env.store.create_upload("CP-X", request_id="r")
    async with env.http.put(grant.http_url + "via-http.log", data=b"http") as resp:
        assert resp.status == 201
    with pytest.raises(ftplib.error_perm, match="530"):
        await asyncio.to_thread(_ftp_login, grant.ftp_url)


async def test_on_stored_failure_does_not_lose_upload(files_settings: Settings, redis_client, database):
    async def broken(stored: StoredFile) -> None:
        raise RuntimeError("bus down")

    intake = make_intake(files_settings, redis_client, database, on_stored=broken)
    try:
        async with run_file_servers(intake, operator_token=TOKEN, enable_ftp=False) as servers:
            grant = await servers.intake.create_upload("CP-1", request_id="r")
            async with aiohttp.ClientSession() as http:
                async with http.put(grant.http_url + quote("a.log"), data=b"abc") as resp:
                    assert resp.status == 201
            assert len(await servers.intake.list_files()) == 1
    finally:
        keys = [k async for k in redis_client.scan_iter(match=f"{files_settings.namespace}:*")]
        if keys:
            await redis_client.delete(*keys)


# --------------------------------------------------------------------------- HTTPS and FTPS (FILES_TLS_*)


def _ftps_store(ftp_url: str, name: str, data: bytes, context: ssl.SSLContext) -> tuple[str, str]:
    """Explicit FTPS as a charge point does it: AUTH TLS, login, PROT P, STOR. (TLS version, reply)."""
    parts = urlsplit(ftp_url)
    ftp = ftplib.FTP_TLS(context=context)
    try:
        ftp.connect(parts.hostname, parts.port, timeout=5)
        ftp.auth()
        ftp.login(parts.username, parts.password)
        ftp.prot_p()
        return ftp.sock.version(), ftp.storbinary(f"STOR {name}", io.BytesIO(data))
    finally:
        ftp.close()


async def test_https_and_ftps_with_the_tls_settings(files_settings: Settings, redis_client, database, tmp_path):
    ca, ca_key = test_pki.make_ca("Files CA")
    cert, key = test_pki.issue_server(ca, ca_key, "localhost")
    cert_file, key_file = test_pki.write_pair(tmp_path, "files", [cert], key)
    settings = files_settings.replace(files_tls_cert_file=cert_file, files_tls_key_file=key_file,
                                      files_public_host="localhost")
    trusting = test_pki.client_context(pki.to_pem(ca))
    intake = make_intake(settings, redis_client, database)
    try:
        async with run_file_servers(intake, operator_token=TOKEN, ftp_options={"auth_failed_delay": 0.05}) as servers:
            assert intake.urls.http_base == f"https://localhost:{servers.http_port}"
            assert intake.urls.ftp_base == f"ftps://localhost:{servers.ftp_port}"
            grant = await intake.create_upload("CP-T", request_id="tls-1")
            assert grant.http_url.startswith("https://localhost:") and grant.ftp_url.startswith("ftps://u")
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                async with http.put(grant.http_url + "over-https.log", data=b"secret diagnostics", ssl=trusting) as resp:
                    assert resp.status == 201
                    record = await resp.json()
                async with http.get(intake.urls.file(record["file_id"]), ssl=trusting) as resp:
                    assert resp.status == 200 and await resp.read() == b"secret diagnostics"
                with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served on that port
                    async with http.get(f"http://localhost:{servers.http_port}/firmware"):
                        pass
            # FTPS: plain logins are refused before any credential is sent in clear
            with pytest.raises(ftplib.error_perm, match="550 SSL/TLS required"):
                await asyncio.to_thread(_ftp_login, grant.ftp_url)
            ftp_grant = await intake.create_upload("CP-T", request_id="tls-2")
            version, reply = await asyncio.to_thread(_ftps_store, ftp_grant.ftp_url, "over-ftps.log", b"x" * 5000,
                                                     trusting)
            assert reply.startswith("226") and version in ("TLSv1.2", "TLSv1.3")
            [stored] = [r for r in await intake.list_files(charge_point_id="CP-T") if r.request_id == "tls-2"]
            assert (stored.protocol, stored.size) == ("ftp", 5000)
    finally:
        keys = [k async for k in redis_client.scan_iter(match=f"{files_settings.namespace}:*")]
        if keys:
            await redis_client.delete(*keys)


async def test_an_operator_token_is_generated_once_when_none_is_set(files_settings: Settings):
    from services.diagnostics.operator_token import TOKEN_FILE, operator_token

    settings = files_settings.replace(files_operator_token="")
    token, generated, path = operator_token(settings)
    assert generated and len(token) >= 32 and path == Path(settings.files_root) / TOKEN_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert operator_token(settings) == (token, False, path)        # the next start reads it, shows nothing
    assert operator_token(files_settings)[0] == files_settings.files_operator_token  # a configured one wins
