"""``streamml keys generate``: an Ed25519 key pair for signing models."""

from __future__ import annotations

from pathlib import Path

import click

from streamml.signing import DEFAULT_KEY_NAME, PRIVATE_SUFFIX, PUBLIC_SUFFIX, SigningKey, generate_key_pair
from streamml_cli.options import settings_from

__all__ = ["COMMANDS", "ensure_default_keys"]


@click.group("keys")
def keys_group() -> None:
    """Model signing keys: the private key where models are published, public keys on consumers."""


@keys_group.command("generate")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write NAME.key and NAME.pub [default: $STREAMML_HOME/keys].")
@click.option("--name", default=DEFAULT_KEY_NAME, show_default=True, help="File name of the pair, without suffix.")
@click.option("--overwrite", is_flag=True, help="Replace an existing pair (consumers must then trust the new key).")
@click.option("--if-missing", is_flag=True, help="Do nothing (exit 0) when the pair exists: for scripts.")
@click.option("--public-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also copy the public key here (e.g. a volume only consumers mount).")
def generate(directory: Path | None, name: str, overwrite: bool, if_missing: bool, public_dir: Path | None) -> None:
    """Write an Ed25519 key pair: the private key with mode 0600, the public key to hand to consumers."""
    settings = settings_from()
    directory = directory or settings.keys_dir
    private = directory / f"{name}{PRIVATE_SUFFIX}"
    public = directory / f"{name}{PUBLIC_SUFFIX}"
    existed = if_missing and private.exists()
    if existed:
        key = SigningKey.from_file(private)
        click.echo(f"exists   {private} (key id {key.key_id})")
    else:
        key = generate_key_pair(directory, name, overwrite=overwrite)
        click.echo(f"created  {private} (private, mode 0600; keep it where models are published)")
        click.echo(f"created  {public} (public; give it to every consumer)")
        click.echo(f"key id   {key.key_id}")
    if public_dir is not None:
        public_dir.mkdir(parents=True, exist_ok=True)
        (public_dir / public.name).write_bytes(key.public_pem())
        click.echo(f"copied   {public_dir / public.name}")
    if not existed:
        click.echo(f"publisher: export STREAMML_MODEL_SIGNING_KEY_FILE={private}")
        click.echo(f"consumers: export STREAMML_MODEL_TRUSTED_KEYS={public}")


def ensure_default_keys(keys_dir: Path) -> SigningKey:
    """The default key pair under ``keys_dir``, created on first use (the demo's signed default path)."""
    private = keys_dir / f"{DEFAULT_KEY_NAME}{PRIVATE_SUFFIX}"
    if private.exists():
        return SigningKey.from_file(private)
    return generate_key_pair(keys_dir, DEFAULT_KEY_NAME)


COMMANDS = [keys_group]
