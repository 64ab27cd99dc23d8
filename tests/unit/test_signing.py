"""Ed25519 key files, keyrings and the settings that choose them (streamml.signing)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from streamml.config import load_settings
from streamml.errors import ConfigError
from streamml.signing import (
    DEFAULT_KEY_NAME,
    Keyring,
    SigningKey,
    generate_key_pair,
    key_id_of,
    signer_from_settings,
    trusted_keyring,
)

KEY_ID = re.compile(r"[0-9a-f]{16}")
DATA = b"the bytes a consumer checks"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- generate_key_pair ---------------------------------------------------------------------------


def test_generate_key_pair_writes_a_private_key_only_the_owner_can_read(tmp_path: Path) -> None:
    key = generate_key_pair(tmp_path / "keys", "pub1")
    private, public = tmp_path / "keys" / "pub1.key", tmp_path / "keys" / "pub1.pub"
    assert private.is_file() and public.is_file()
    assert mode(private) == 0o600
    assert mode(public) == 0o644
    assert b"PRIVATE KEY" in private.read_bytes() and b"PRIVATE" not in public.read_bytes()
    assert KEY_ID.fullmatch(key.key_id)


def test_generate_key_pair_uses_the_default_name(tmp_path: Path) -> None:
    generate_key_pair(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{DEFAULT_KEY_NAME}.key", f"{DEFAULT_KEY_NAME}.pub"]


@pytest.mark.parametrize("existing", ["k.key", "k.pub"])
def test_generate_key_pair_refuses_to_replace_a_key(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_bytes(b"precious")
    with pytest.raises(ConfigError, match="already exists"):
        generate_key_pair(tmp_path, "k")
    assert (tmp_path / existing).read_bytes() == b"precious"


def test_overwrite_replaces_the_pair_and_tightens_an_existing_private_file(tmp_path: Path) -> None:
    first = generate_key_pair(tmp_path, "k")
    (tmp_path / "k.key").chmod(0o644)  # os.open(..., 0o600) alone would keep this mode
    second = generate_key_pair(tmp_path, "k", overwrite=True)
    assert second.key_id != first.key_id
    assert mode(tmp_path / "k.key") == 0o600
    assert SigningKey.from_file(tmp_path / "k.key").key_id == second.key_id
    assert Keyring.from_paths([tmp_path / "k.pub"]).key_ids == [second.key_id]


# -- loading keys back ---------------------------------------------------------------------------


def test_a_key_pair_round_trips_through_its_files(tmp_path: Path) -> None:
    written = generate_key_pair(tmp_path, "k")
    loaded = SigningKey.from_file(tmp_path / "k.key")
    assert loaded.key_id == written.key_id == key_id_of(loaded.public_key)
    signature = loaded.sign(DATA)
    for keyring in (Keyring.from_paths([tmp_path / "k.pub"]), Keyring.from_paths([str(tmp_path)])):
        assert keyring.key_ids == [written.key_id] and written.key_id in keyring
        assert keyring.verify(written.key_id, signature, DATA) is None
        assert "does not match" in (keyring.verify(written.key_id, signature, DATA + b"!") or "")


def test_a_keyring_from_a_directory_reads_every_public_key_and_nothing_else(tmp_path: Path) -> None:
    a = generate_key_pair(tmp_path, "a")
    b = generate_key_pair(tmp_path, "b")
    (tmp_path / "notes.txt").write_text("not a key")  # ignored: only *.pub files are keys
    keyring = Keyring.from_paths([tmp_path])
    assert keyring.key_ids == sorted([a.key_id, b.key_id]) and len(keyring) == 2
    assert keyring.verify(b.key_id, b.sign(DATA), DATA) is None
    # a signature by a is not b's, even though a is trusted too
    assert "does not match" in (keyring.verify(b.key_id, a.sign(DATA), DATA) or "")


def test_key_ids_are_16_hex_digits_of_the_public_key() -> None:
    keys = [SigningKey.generate() for _ in range(5)]
    assert all(KEY_ID.fullmatch(k.key_id) for k in keys)
    assert len({k.key_id for k in keys}) == 5


def test_keyring_verify_says_why_a_signature_is_not_accepted() -> None:
    trusted, stranger = SigningKey.generate(), SigningKey.generate()
    keyring = Keyring().with_key(trusted.public_key)
    good = trusted.sign(DATA)
    assert keyring.verify(trusted.key_id, good, DATA) is None
    assert keyring.verify(None, good, DATA) == "not signed"
    assert keyring.verify(trusted.key_id, None, DATA) == "not signed"
    assert "does not trust" in (keyring.verify(stranger.key_id, stranger.sign(DATA), DATA) or "")
    assert "63 bytes" in (keyring.verify(trusted.key_id, good[:63], DATA) or "")
    assert "does not match" in (keyring.verify(trusted.key_id, bytes(64), DATA) or "")
    assert "trusted: none" in (Keyring().verify(trusted.key_id, good, DATA) or "")


def _write_bad_files(tmp_path: Path) -> dict[str, Path]:
    ed = ed25519.Ed25519PrivateKey.generate()
    ecdsa = ec.generate_private_key(ec.SECP256R1())
    files = {
        "garbage": b"not a pem at all",
        "empty": b"",
        "ed25519-public": ed.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "ed25519-private": ed.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        "encrypted-private": ed.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        ),
        "ec-private": ecdsa.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        "ec-public": ecdsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(data)
    paths["missing"] = tmp_path / "missing.pem"
    return paths


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("garbage", "not an unencrypted PEM private key"),
        ("empty", "not an unencrypted PEM private key"),
        ("ed25519-public", "not an unencrypted PEM private key"),
        ("encrypted-private", "not an unencrypted PEM private key"),
        ("ec-private", "not an Ed25519 private key"),
        ("missing", "cannot read the model signing key"),
    ],
)
def test_a_bad_private_key_file_is_a_config_error(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SigningKey.from_file(_write_bad_files(tmp_path)[name])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("garbage", "not a PEM public key"),
        ("empty", "not a PEM public key"),
        ("ed25519-private", "not a PEM public key"),
        ("ec-public", "not an Ed25519 public key"),
        ("missing", "cannot read trusted model key"),
    ],
)
def test_a_bad_public_key_file_is_a_config_error(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Keyring.from_paths([_write_bad_files(tmp_path)[name]])


def test_one_bad_public_key_in_a_directory_fails_the_whole_keyring(tmp_path: Path) -> None:
    generate_key_pair(tmp_path, "good")
    (tmp_path / "broken.pub").write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ConfigError, match="broken.pub"):
        Keyring.from_paths([tmp_path])


def test_the_private_key_never_shows_in_repr(tmp_path: Path) -> None:
    key = generate_key_pair(tmp_path, "k")
    pem = key.private_pem().decode()
    body = "".join(line for line in pem.splitlines() if "-----" not in line)
    raw = key._private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    for text in (repr(key), str(key), f"{key}", repr([key]), repr({"signer": key})):
        assert key.key_id in text
        assert body not in text and body[:16] not in text
        assert raw.hex() not in text and repr(raw) not in text
    assert "PRIVATE" not in repr(Keyring().with_key(key.public_key))


# -- settings ------------------------------------------------------------------------------------


def test_without_any_key_there_is_no_signer_and_an_empty_keyring(tmp_path: Path) -> None:
    settings = load_settings(env={}, home=tmp_path / "home")
    assert settings.keys_dir == tmp_path / "home" / "keys"
    assert signer_from_settings(settings) is None
    assert len(trusted_keyring(settings)) == 0


def test_the_default_pair_under_home_keys_signs_and_is_trusted(tmp_path: Path) -> None:
    settings = load_settings(env={}, home=tmp_path / "home")
    written = generate_key_pair(settings.keys_dir)
    signer = signer_from_settings(settings)
    assert signer is not None and signer.key_id == written.key_id
    keyring = trusted_keyring(settings)
    assert keyring.key_ids == [written.key_id]
    assert keyring.verify(signer.key_id, signer.sign(DATA), DATA) is None


def test_a_configured_signing_key_file_wins_over_the_default_pair(tmp_path: Path) -> None:
    default = generate_key_pair(tmp_path / "home" / "keys")
    configured = generate_key_pair(tmp_path / "elsewhere", "publisher")
    settings = load_settings(
        env={"STREAMML_MODEL_SIGNING_KEY_FILE": str(tmp_path / "elsewhere" / "publisher.key")},
        home=tmp_path / "home",
    )
    signer = signer_from_settings(settings)
    assert signer is not None and signer.key_id == configured.key_id != default.key_id


def test_a_configured_signing_key_file_that_is_missing_is_a_config_error(tmp_path: Path) -> None:
    generate_key_pair(tmp_path / "home" / "keys")  # a default exists, but the configured file wins
    settings = load_settings(env={}, home=tmp_path / "home", model_signing_key_file=tmp_path / "gone.key")
    with pytest.raises(ConfigError, match="gone.key"):
        signer_from_settings(settings)


def test_configured_trusted_keys_replace_the_default_folder(tmp_path: Path) -> None:
    default = generate_key_pair(tmp_path / "home" / "keys")
    a = generate_key_pair(tmp_path / "a", "a")
    b = generate_key_pair(tmp_path / "b", "b")
    trusted = f"{tmp_path / 'a' / 'a.pub'}, {tmp_path / 'b'}"
    settings = load_settings(env={"STREAMML_MODEL_TRUSTED_KEYS": trusted}, home=tmp_path / "home")
    keyring = trusted_keyring(settings)
    assert keyring.key_ids == sorted([a.key_id, b.key_id])
    assert default.key_id not in keyring


def test_a_configured_trusted_key_that_is_missing_is_a_config_error(tmp_path: Path) -> None:
    settings = load_settings(env={}, home=tmp_path / "home", model_trusted_keys=str(tmp_path / "nope.pub"))
    with pytest.raises(ConfigError, match="nope.pub"):
        trusted_keyring(settings)
