"""The embedded broker's TLS front, brokerless: it forwards bytes over TLS and refuses what is not TLS."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from streamml.broker import EmbeddedBroker, free_port
from streamml.errors import ConfigError
from streamml.tls_proxy import serve, server_context
from tests.tls_certs import TlsFiles, make_tls_files


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _through_front(tls: TlsFiles, client: ssl.SSLContext | None) -> bytes:
    """Send bytes through a front to an echo server; return what came back."""
    upstream = await asyncio.start_server(_echo, "127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]
    port = free_port()
    front = asyncio.create_task(serve(("127.0.0.1", port), ("127.0.0.1", up_port), server_context(
        tls.server_cert, tls.server_key)))
    try:
        for _ in range(200):  # until the front listens (it binds at once; bounded anyway)
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
                break
            except ConnectionRefusedError:
                await asyncio.sleep(0.01)
        else:
            raise AssertionError("the TLS front never listened")
        payload = b"kafka frame " * 10_000  # over one TLS record and one read chunk
        writer.write(payload)
        await writer.drain()
        received = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
        writer.close()
        return received
    finally:
        front.cancel()
        upstream.close()


def test_the_front_forwards_bytes_over_tls_with_the_servers_certificate(tls: TlsFiles) -> None:
    client = ssl.create_default_context(cafile=str(tls.ca))  # checks 127.0.0.1 against the certificate, too
    assert asyncio.run(_through_front(tls, client)) == b"kafka frame " * 10_000


def test_a_client_trusting_another_ca_fails_the_handshake(tls: TlsFiles) -> None:
    client = ssl.create_default_context(cafile=str(tls.other_ca))
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(_through_front(tls, client))


def test_a_plaintext_client_gets_nothing_back(tls: TlsFiles) -> None:
    with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
        asyncio.run(_through_front(tls, None))


def test_the_embedded_broker_needs_both_cert_and_key(tls: TlsFiles, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs both --cert and --key"):
        EmbeddedBroker(home=tmp_path, cert=tls.server_cert)
    with pytest.raises(ConfigError, match="--key: .* is not a readable file"):
        EmbeddedBroker(home=tmp_path, cert=tls.server_cert, key=tmp_path / "missing.key")
    assert EmbeddedBroker(home=tmp_path, cert=tls.server_cert, key=tls.server_key).tls is not None
