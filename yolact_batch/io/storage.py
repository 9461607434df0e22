"""Reading and writing through fsspec (local paths, ``file://``, ``s3://``, ``gs://``, ...).

Credentials never pass through here: s3fs reads them from the usual AWS environment and
config chain. ``StorageOptions`` carries only the non-secret knobs a command line sets.

One retry policy for every storage call of the job (listing, image reads, commits, the
job manifest): ``retry`` repeats a call that failed for a reason of the storage (refused
connections, timeouts, 5xx, throttling) with exponential backoff, 0.5 s doubling to 8 s,
until ``StorageOptions.retry_window_s`` (120 s) has passed since the first failure; then it
raises ``StorageUnavailable``, which fails the run: an image is never recorded as bad
because the storage was away. botocore's own retries are off (one attempt per call, each
bounded by s3fs's 5 s connect and 15 s read timeouts) so that the window is the only one.
Errors of the object itself (missing, a directory, permission denied) are raised at once.
"""

from __future__ import annotations

import errno
import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import fsspec

T = TypeVar("T")
# Faults of the named object, not of the storage: retrying cannot fix them.
PERMANENT: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    ValueError,
    KeyError,
    TypeError,
)
_PERMANENT_ERRNO = {
    errno.ENOENT,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.EACCES,
    errno.EPERM,
    errno.ELOOP,
    errno.ENAMETOOLONG,
    errno.ENXIO,
    errno.EINVAL,
}
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0


class StorageUnavailable(RuntimeError):
    """Storage failed for longer than the retry window: the run stops, nothing is recorded as bad."""


@dataclass(frozen=True)
class StorageOptions:
    """Non-secret options for object storage.

    Attributes:
        endpoint_url: S3-compatible endpoint (MinIO, SeaweedFS, a local test server).
        anonymous: access public buckets without credentials.
        profile: AWS profile name from ``~/.aws/config``.
        region: AWS region name.
        retry_window_s: how long a storage call that fails for a reason of the storage is
            retried before the run fails (``retry``).
    """

    endpoint_url: str | None = None
    anonymous: bool = False
    profile: str | None = None
    region: str | None = None
    retry_window_s: float = 120.0

    def __post_init__(self) -> None:
        if not self.retry_window_s >= 0:
            raise ValueError(f"io-retry-window must be >= 0 seconds, got {self.retry_window_s}")

    def for_protocol(self, protocol: str) -> dict[str, Any]:
        """fsspec keyword arguments for a filesystem of ``protocol``."""
        if protocol not in ("s3", "s3a"):
            return {"anon": True} if self.anonymous and protocol in ("gs", "gcs") else {}
        # Our ``retry`` is the one retry policy; botocore's would add its own 5 attempts to each call.
        kwargs: dict[str, Any] = {"config_kwargs": {"retries": {"total_max_attempts": 1}}}
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
        return retry(lambda: fs.cat_file(path), f"reading {url}", options.retry_window_s)
    except FileNotFoundError:
        raise FileNotFoundError(f"{url}: no such file") from None


def is_permanent(exc: BaseException, permanent: tuple[type[BaseException], ...] = PERMANENT) -> bool:
    """True for errors of the object itself (retrying cannot help); False for the storage's."""
    if isinstance(exc, permanent):
        return True
    return isinstance(exc, OSError) and exc.errno in _PERMANENT_ERRNO


def retry(
    call: Callable[[], T], what: str, window_s: float, permanent: tuple[type[BaseException], ...] = PERMANENT
) -> T:
    """``call()``, retried on storage failures with backoff (0.5 s doubling to 8 s) for ``window_s``
    seconds after the first failure.

    Raises:
        StorageUnavailable: the storage kept failing for the whole window; names ``what``.
        The ``call``'s own error, at once, when ``is_permanent``.
    """
    deadline, delay, attempts = None, FIRST_BACKOFF_S, 0
    while True:
        try:
            return call()
        except Exception as exc:
            if is_permanent(exc, permanent):
                raise
            attempts += 1
            now = time.monotonic()
            deadline = now + window_s if deadline is None else deadline
            if now >= deadline:
                raise StorageUnavailable(
                    f"{what}: storage unavailable for {window_s:g} s ({attempts} attempts; last: {type(exc).__name__}: "
                    f"{str(exc)[:200]}); nothing was recorded for it: rerun the same command when the storage is back"
                ) from exc
            time.sleep(min(delay, deadline - now))
            delay = min(2 * delay, MAX_BACKOFF_S)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """True for the local filesystem (``file://`` or a plain path)."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def model_digest(blob: bytes) -> str:
    """``sha256:<hex>`` of a model file's bytes: the one digest of a model (``ModelRef.digest``,
    the job's identity, engine cache keys)."""
    return "sha256:" + hashlib.sha256(blob).hexdigest()
