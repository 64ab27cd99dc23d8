"""Ed25519 keys for model envelopes: a private key where models are published, a keyring on consumers.

Whoever can write to the models topic can put a record there; only the holder
of a private key can make a record that consumers trust. So the publisher
signs every envelope (and every rollback or pin) with its private key, and a
consumer verifies the signature against a keyring of public keys before it
looks at anything else. Several public keys can be trusted at once, so a key
is rotated by adding the new public key to the consumers first, then
switching the publisher to the new private key. Each key is named by its key
id, the first 16 hex digits of the sha256 of its raw public key, which the
envelope carries so the consumer knows which key to check against.

Files are PEM: the private key PKCS#8 (written with mode 0600), the public
key SubjectPublicKeyInfo. ``streamml keys generate`` writes a pair.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from streamml.config import Settings
from streamml.errors import ConfigError

__all__ = [
    "PRIVATE_SUFFIX",
    "PUBLIC_SUFFIX",
    "key_id_of",
    "SigningKey",
    "Keyring",
    "generate_key_pair",
    "DEFAULT_KEY_NAME",
    "signer_from_settings",
    "trusted_keyring",
]

#: File name (without suffix) of the default key pair under ``Settings.keys_dir``.
DEFAULT_KEY_NAME = "model-signing"

PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"
#: Length of an Ed25519 signature in bytes.
SIGNATURE_BYTES = 64


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """The key id: 16 hex digits of the sha256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    """A private Ed25519 key and its key id; ``repr`` never shows the key."""

    key_id: str
    _private: Ed25519PrivateKey

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r})"

    @classmethod
    def generate(cls) -> SigningKey:
        private = Ed25519PrivateKey.generate()
        return cls(key_id_of(private.public_key()), private)

    @classmethod
    def from_file(cls, path: str | Path) -> SigningKey:
        """Load a PEM (PKCS#8) private key; :class:`ConfigError` says what is wrong with the file."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the model signing key {path}: {exc.strerror or exc}") from exc
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise ConfigError(f"{path} holds a {type(private).__name__}, not an Ed25519 private key")
        return cls(key_id_of(private.public_key()), private)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._private.public_key()

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def private_pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class Keyring:
    """The public keys a consumer trusts, by key id."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey] | None = None) -> None:
        self._keys = dict(keys or {})

    def __repr__(self) -> str:
        return f"Keyring({sorted(self._keys)})"

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def with_key(self, public_key: Ed25519PublicKey) -> Keyring:
        """A keyring that also trusts ``public_key``."""
        return Keyring({**self._keys, key_id_of(public_key): public_key})

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path]) -> Keyring:
        """Load public keys from PEM files, or from every ``*.pub`` file of a directory.

        A path that is missing or not an Ed25519 public key is a
        :class:`ConfigError`: a consumer must not start believing it trusts a
        key it could not read.
        """
        keys: dict[str, Ed25519PublicKey] = {}
        for raw in paths:
            path = Path(raw)
            files = sorted(path.glob(f"*{PUBLIC_SUFFIX}")) if path.is_dir() else [path]
            for file in files:
                public = _load_public(file)
                keys[key_id_of(public)] = public
        return cls(keys)

    def verify(self, key_id: str | None, signature: bytes | None, data: bytes) -> str | None:
        """Return ``None`` if ``signature`` is ``key_id``'s over ``data``, else why not."""
        if key_id is None or signature is None:
            return "not signed"
        public = self._keys.get(key_id)
        if public is None:
            trusted = ", ".join(self.key_ids) or "none"
            return f"signed by key {key_id!r}, which this consumer does not trust (trusted: {trusted})"
        if len(signature) != SIGNATURE_BYTES:
            return f"signature is {len(signature)} bytes, not {SIGNATURE_BYTES}"
        try:
            public.verify(signature, data)
        except InvalidSignature:
            return f"signature by key {key_id} does not match (tampered record or forged signature)"
        return None


def _load_public(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read trusted model key {path}: {exc.strerror or exc}") from exc
    try:
        public = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(public, Ed25519PublicKey):
        raise ConfigError(f"{path} holds a {type(public).__name__}, not an Ed25519 public key")
    return public


def generate_key_pair(directory: str | Path, name: str = DEFAULT_KEY_NAME, *, overwrite: bool = False) -> SigningKey:
    """Write ``NAME.key`` (mode 0600) and ``NAME.pub`` into ``directory``; return the key.

    Refuses (:class:`ConfigError`) to replace an existing key unless
    ``overwrite``: losing a private key means consumers must be told to trust
    a new one.
    """
    directory = Path(directory)
    private_path = directory / f"{name}{PRIVATE_SUFFIX}"
    public_path = directory / f"{name}{PUBLIC_SUFFIX}"
    if not overwrite and (private_path.exists() or public_path.exists()):
        raise ConfigError(f"{private_path} or {public_path} already exists; pass --overwrite to replace the pair")
    directory.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    # Created with 0600 from the start, so the private key is never readable by others, not even briefly.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    descriptor = os.open(private_path, flags, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.private_pem())
    os.chmod(private_path, 0o600)  # an existing file keeps its mode through os.open
    public_path.write_bytes(key.public_pem())
    os.chmod(public_path, 0o644)
    return key


def signer_from_settings(settings: Settings) -> SigningKey | None:
    """The publisher's signing key: the configured file, else the default pair's, else ``None``.

    A configured file that cannot be read is a :class:`ConfigError`; no key
    at all is ``None`` (the publisher then refuses to publish unless
    development mode is on).
    """
    if settings.model_signing_key_file is not None:
        return SigningKey.from_file(settings.model_signing_key_file)
    default = settings.keys_dir / f"{DEFAULT_KEY_NAME}{PRIVATE_SUFFIX}"
    return SigningKey.from_file(default) if default.exists() else None


def trusted_keyring(settings: Settings) -> Keyring:
    """The consumers' keyring: ``model_trusted_keys``, else every ``*.pub`` in the default keys folder."""
    paths: list[str | Path] = list(settings.list_of("model_trusted_keys"))
    if not paths and settings.keys_dir.is_dir():
        paths = [settings.keys_dir]
    return Keyring.from_paths(paths)
