"""Protection at rest: Parquet modular encryption of the biometric columns.

With encryption on, the ``embedding`` column of ``faces`` and the ``centroid`` column of
``identities`` are encrypted with a column key; the footer stays plaintext (signed), so every
other column remains readable by any Parquet reader without a key -- DuckDB and pyarrow included
-- while reading an encrypted column without the key fails. Keys follow Parquet's envelope
scheme (pyarrow's ``CryptoFactory``): each file gets random data keys, wrapped by the master keys
named here through a KMS client:

- ``kms="local"``: a JSON key file ``{"KEY_ID": "BASE64 16/24/32-byte key", ...}`` (tests, the
  demo, air-gapped sites); data keys are wrapped with AES-GCM. Keep the file out of the output.
- ``kms="aws"``: AWS KMS; key ids are KMS key ids, ARNs or aliases. Credentials come from the
  standard AWS environment of each node (the Ray nodes' instance profile needs kms:Encrypt and
  kms:Decrypt on the keys; ``infra/terraform/`` creates one).

The setting belongs to the output, not to one run: the first run with encryption writes it to
``OUT/_encryption.json`` (key *ids*, never keys), and every later reader and writer of that
output -- runs, clustering, scoring, ``forget``, search, the report -- follows it, so an encrypted
output never gets a plaintext embedding file by accident. A run asking for other keys fails. The
local key file's path is recorded too, but it is where the first run found the file, not part of
the setting: a machine that keeps it elsewhere (a laptop searching the archive, a moved file)
names its copy with ``FACEPIPE_KEY_FILE`` (every command) or ``--key-file`` (a run).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe

from facepipe.errors import UserError
from facepipe.flags import flag
from facepipe.storage import fs as fsio

#: The biometric columns (a column absent from a table is simply not there to encrypt).
BIOMETRIC_COLUMNS = ("embedding", "centroid")
SETTINGS_FILE = "_encryption.json"
#: this machine's copy of the local key file, when it is not where the output's first run found it
KEY_FILE_ENV = "FACEPIPE_KEY_FILE"


@dataclass(frozen=True)
class EncryptionConfig:
    """kms: "local" or "aws". footer_key / column_key: master key ids (the footer key signs the
    plaintext footer; the column key encrypts the biometric columns). key_file: the local key
    file (kms "local" only)."""

    kms: str | None = flag(
        None,
        "--kms",
        "encrypt the embedding and centroid columns (Parquet modular encryption, plaintext footer); "
        "the output keeps this setting for every later run",
        choices=("local", "aws"),
    )
    footer_key: str = flag("facepipe-footer", "--footer-key", "master key id signing the footer")
    column_key: str = flag("facepipe-embeddings", "--column-key", "master key id of the biometric columns")
    key_file: str = flag("", "--key-file", "with --kms local: JSON file {KEY_ID: base64 key} holding the master keys")

    def __post_init__(self) -> None:
        if self.kms not in ("local", "aws"):
            raise ValueError(f"unknown KMS {self.kms!r}: use local or aws")
        if self.kms == "local" and not self.key_file:
            raise ValueError("the local KMS needs a key file (--key-file)")
        if not (self.footer_key and self.column_key):
            raise ValueError("encryption needs a footer key id and a column key id")


class KeyFileError(UserError, ValueError):
    """The local key file cannot be read, or holds a key of a wrong size: one line (exit 2)."""


class LocalKeyFileKms(pe.KmsClient):
    """Master keys from a JSON key file; data keys wrapped with AES-GCM (the key id is the
    associated data, so a wrapped key cannot be replayed under another id)."""

    def __init__(self, key_file: str) -> None:
        super().__init__()
        try:
            raw = json.loads(open(key_file, "rb").read())
            self.keys = {k: base64.b64decode(v) for k, v in raw.items()}
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise KeyFileError(
                f"cannot read the key file {key_file} ({why}); if this machine keeps it elsewhere, "
                f"name it with {KEY_FILE_ENV}=PATH (or --key-file for a run)"
            ) from None
        bad = [k for k, v in self.keys.items() if len(v) not in (16, 24, 32)]
        if bad:
            raise KeyFileError(f"key file {key_file}: keys {bad} are not 16, 24 or 32 bytes")

    def _key(self, key_id: str) -> bytes:
        if key_id not in self.keys:
            raise KeyError(f"no key {key_id!r} in the key file")
        return self.keys[key_id]

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        ct = AESGCM(self._key(master_key_identifier)).encrypt(nonce, key_bytes, master_key_identifier.encode())
        return base64.b64encode(nonce + ct).decode()

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        b = base64.b64decode(wrapped_key)
        return AESGCM(self._key(master_key_identifier)).decrypt(b[:12], b[12:], master_key_identifier.encode())


class AwsKms(pe.KmsClient):
    """Data keys wrapped by AWS KMS (Encrypt / Decrypt with the master key id)."""

    def __init__(self) -> None:
        super().__init__()
        import boto3

        self.client = boto3.client("kms")

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        r = self.client.encrypt(KeyId=master_key_identifier, Plaintext=key_bytes)
        return base64.b64encode(r["CiphertextBlob"]).decode()

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        return self.client.decrypt(KeyId=master_key_identifier, CiphertextBlob=base64.b64decode(wrapped_key))[
            "Plaintext"
        ]


@lru_cache(maxsize=8)
def _factory(cfg: EncryptionConfig) -> pe.CryptoFactory:
    if cfg.kms == "local":
        client = LocalKeyFileKms(cfg.key_file)
        return pe.CryptoFactory(lambda _conn: client)
    return pe.CryptoFactory(lambda _conn: AwsKms())


def encryption_properties(cfg: EncryptionConfig, schema: pa.Schema):
    """File encryption properties for a table of ``schema``, or None when it holds no biometric
    column (such files stay plain)."""
    cols = [c for c in BIOMETRIC_COLUMNS if c in schema.names]
    if not cols:
        return None
    conf = pe.EncryptionConfiguration(
        footer_key=cfg.footer_key,
        column_keys={cfg.column_key: cols},
        plaintext_footer=True,
        double_wrapping=True,
        data_key_length_bits=256,
    )
    return _factory(cfg).file_encryption_properties(pe.KmsConnectionConfig(), conf)


def decryption_properties(cfg: EncryptionConfig):
    return _factory(cfg).file_decryption_properties(pe.KmsConnectionConfig(), pe.DecryptionConfiguration())


def dataset_format(cfg: EncryptionConfig | None):
    """The ``pyarrow.dataset`` Parquet format that decrypts with ``cfg`` (plain files read too)."""
    import pyarrow.dataset as pads

    if cfg is None:
        return pads.ParquetFileFormat()
    dec = pads.ParquetDecryptionConfig(_factory(cfg), pe.KmsConnectionConfig(), pe.DecryptionConfiguration())
    return pads.ParquetFileFormat(default_fragment_scan_options=pads.ParquetFragmentScanOptions(decryption_config=dec))


def write_table(table: pa.Table, path: str, fs: pafs.FileSystem, cfg: EncryptionConfig | None, **kw) -> None:
    """``pq.write_table``, encrypting the biometric columns when ``cfg`` is set."""
    props = encryption_properties(cfg, table.schema) if cfg is not None else None
    pq.write_table(table, path, filesystem=fs, encryption_properties=props, **kw)


def read_table(path: str, fs: pafs.FileSystem, cfg: EncryptionConfig | None, **kw) -> pa.Table:
    """``pq.read_table``, decrypting when ``cfg`` is set."""
    props = decryption_properties(cfg) if cfg is not None else None
    return pq.read_table(path, filesystem=fs, decryption_properties=props, **kw)


def parquet_file(path: str, fs: pafs.FileSystem, cfg: EncryptionConfig | None) -> pq.ParquetFile:
    """A table file opened (its footer read: ``schema_arrow``, ``read``, ``iter_batches``),
    decrypting when ``cfg`` is set."""
    props = decryption_properties(cfg) if cfg is not None else None
    return pq.ParquetFile(path, filesystem=fs, decryption_properties=props)


def iter_batches(path: str, fs: pafs.FileSystem, cfg: EncryptionConfig | None, **kw):
    """``ParquetFile.iter_batches`` (a file a batch at a time), decrypting when ``cfg`` is set."""
    return parquet_file(path, fs, cfg).iter_batches(**kw)


# ---------------------------------------------------------------- the output's setting

_known: dict[str, EncryptionConfig] = {}


def for_output(output: str) -> EncryptionConfig | None:
    """The encryption setting of ``output`` (None: plain). Positive answers are cached per
    process; an output does not go back to plain."""
    if output in _known:
        return _known[output]
    fs, out = fsio.resolve(output)
    try:
        raw = json.loads(fsio.read_bytes(fs, f"{out}/{SETTINGS_FILE}"))
    except FileNotFoundError:
        return None
    cfg = _here(EncryptionConfig(**raw))
    _known[output] = cfg
    return cfg


def _keys(cfg: EncryptionConfig) -> tuple[str | None, str, str]:
    return cfg.kms, cfg.footer_key, cfg.column_key


def _here(cfg: EncryptionConfig) -> EncryptionConfig:
    """``cfg`` with this machine's key file (``FACEPIPE_KEY_FILE``) when one is named."""
    path = os.environ.get(KEY_FILE_ENV)
    return replace(cfg, key_file=os.path.abspath(path)) if path and cfg.kms == "local" else cfg


def check_keys(cfg: EncryptionConfig) -> None:
    """Fail early, on the driver, when the local key file cannot give both master keys (AWS keys
    are checked by KMS on first use)."""
    if cfg.kms == "local":
        missing = [k for k in (cfg.footer_key, cfg.column_key) if k not in LocalKeyFileKms(cfg.key_file).keys]
        if missing:
            raise ValueError(f"key file {cfg.key_file} holds no key {', '.join(missing)}")


def ensure_output(output: str, cfg: EncryptionConfig | None) -> EncryptionConfig | None:
    """Before a run writes: record ``cfg`` as the output's setting when it has none, or check it
    against the recorded one. Returns the setting to use (the recorded one when ``cfg`` is None).
    Raises ValueError (a one-line user error) for a conflicting setting or unusable keys."""
    have = for_output(output)
    if cfg is None:
        if have is not None:
            check_keys(have)
        return have
    if have is not None and _keys(have) != _keys(cfg):  # the keys, not where this machine keeps their file
        raise ValueError(f"{output} is encrypted with {asdict(have)}; this run asks for {asdict(cfg)}")
    check_keys(cfg)
    if have is None:
        fs, out = fsio.resolve(output)
        if any(
            i.type == pafs.FileType.File
            for i in fs.get_file_info(pafs.FileSelector(f"{out}/faces", recursive=True, allow_not_found=True))
        ):
            raise ValueError(
                f"{output} already holds plaintext embeddings: encrypt a new output (or rewrite this one with "
                "--full into a new one)"
            )
        fsio.write_bytes(fs, f"{out}/{SETTINGS_FILE}", json.dumps(asdict(cfg), indent=2, sort_keys=True).encode())
        _known[output] = cfg
    return cfg  # this run's key file, wherever the output's first run found it
