"""Reading and writing through fsspec (local paths, ``file://``, ``s3://``, ``gs://``, ...).

Credentials never pass through here: s3fs reads them from the usual AWS environment and
config chain. ``StorageOptions`` carries only the non-secret knobs a command line sets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import fsspec


@dataclass(frozen=True)
class StorageOptions:
    """Non-secret options for object storage.

    Attributes:
        endpoint_url: S3-compatible endpoint (MinIO, SeaweedFS, a local test server).
        anonymous: access public buckets without credentials.
        profile: AWS profile name from ``~/.aws/config``.
        region: AWS region name.
    """

    endpoint_url: str | None = None
    anonymous: bool = False
    profile: str | None = None
    region: str | None = None

    def for_protocol(self, protocol: str) -> dict[str, Any]:
        """fsspec keyword arguments for a filesystem of ``protocol``."""
        if protocol not in ("s3", "s3a"):
            return {"anon": True} if self.anonymous and protocol in ("gs", "gcs") else {}
        kwargs: dict[str, Any] = {}
        if self.anonymous:
            kwargs["anon"] = True
        if self.profile:
            kwargs["profile"] = self.profile
        client: dict[str, Any] = {}
        if self.endpoint_url:
            client["endpoint_url"] = self.endpoint_url
        if self.region:
            client["region_name"] = self.region
        if client:
            kwargs["client_kwargs"] = client
        return kwargs


def filesystem(url: str, options: StorageOptions = StorageOptions()) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``url`` and the path within it."""
    protocol = fsspec.utils.get_protocol(url)
    fs, path = fsspec.core.url_to_fs(url, **options.for_protocol(protocol))
    return fs, path


def read_bytes(url: str, options: StorageOptions = StorageOptions()) -> bytes:
    """Whole content of ``url``; errors name the URL."""
    fs, path = filesystem(url, options)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{url}: no such file") from None


def model_digest(blob: bytes) -> str:
    """``sha256:<hex>`` of a model file's bytes: the one digest of a model (``ModelRef.digest``,
    the job's identity, engine cache keys)."""
    return "sha256:" + hashlib.sha256(blob).hexdigest()
