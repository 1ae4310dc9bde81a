"""Where an experiment's files live: a local directory or an object store, through pyarrow.

Tune's storage_path, trial checkpoints and the Parquet results all go through one ``Storage``.

An object store is named by a URI (``s3://bucket/prefix``, ``gs://bucket/prefix``, any scheme
``pyarrow.fs.FileSystem.from_uri`` knows). For S3 the usual AWS settings apply, read the way the
AWS CLI and boto3 read them, so one environment serves every tool:

- credentials: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``~/.aws``, or the EC2 instance
  profile (what ``cluster.yaml`` gives every node);
- ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``: an S3-compatible server other than AWS
  (MinIO, Ceph, moto), e.g. ``http://127.0.0.1:9000``;
- ``AWS_REGION`` or ``AWS_DEFAULT_REGION``; without either, AWS buckets have their region
  looked up.

For Google Cloud Storage (``gs://``) the Google client's own credentials lookup applies, and
``STORAGE_EMULATOR_HOST`` names an emulator. Its client stops retrying after
``TUNE_PIPELINE_STORAGE_RETRY_S`` seconds (below), not pyarrow's 15 minutes.

The filesystem object is handed to Tune whole, and Tune pickles it to every trial on every node,
so workers write checkpoints to the same place with the same endpoint and region.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import time
import uuid
from urllib.parse import urlsplit

import pyarrow.fs as pafs


class StorageError(ValueError):
    """A storage URI that cannot be used; the message is one line."""


class StorageUnavailable(OSError):
    """An object store that refused a write for longer than ``RETRY_ENV`` allows, mid-run;
    the message is one line naming the store and the object."""


# Seconds an object-store write is tried again for (default 60): a store that stalls or
# restarts for seconds must not end a run of hours. Every write is a whole object (a PUT), so
# trying it again is safe.
RETRY_ENV = "TUNE_PIPELINE_STORAGE_RETRY_S"


def _retry_seconds() -> float:
    return float(os.environ.get(RETRY_ENV, "60"))


def _with_retries(action, what: str):
    budget = _retry_seconds()
    deadline = time.monotonic() + budget
    delay = 0.25
    while True:
        try:
            return action()
        except OSError as exc:
            if time.monotonic() + delay > deadline:
                raise StorageUnavailable(f"{what} failed for {budget:.0f} s: {one_line(exc)}") \
                    from exc
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


class Storage:
    """A root folder on a pyarrow filesystem.

    Parameters
    ----------
    uri : str
        A local path (relative or absolute) or a URI such as ``s3://bucket/prefix``.

    Raises
    ------
    StorageError
        The URI names no usable filesystem (unknown scheme, no bucket, a query string).
    """

    def __init__(self, uri: str):
        self.uri = uri
        self.is_local = "://" not in uri or uri.startswith("file://")
        if self.is_local:
            path = uri[len("file://"):] if uri.startswith("file://") else uri
            self.fs: pafs.FileSystem = pafs.LocalFileSystem()
            self.root = os.path.abspath(os.path.expanduser(path))
        else:
            self.fs, self.root = _filesystem_from_uri(uri)
        self.root = self.root.rstrip("/") or "/"

    @property
    def display(self) -> str:
        return self.root if self.is_local else self.uri.rstrip("/")

    def path(self, *parts: str) -> str:
        """A path inside the root, as the filesystem names it."""
        return posixpath.join(self.root, *parts) if not self.is_local else os.path.join(self.root, *parts)

    def uri_of(self, *parts: str) -> str:
        """A path inside the root as the user would write it (local path or full URI)."""
        if self.is_local:
            return self.path(*parts)
        return posixpath.join(self.uri.rstrip("/"), *parts)

    def check_writable(self) -> None:
        """Fail early, with one line, if nothing can be written under the root.

        On an object store an empty probe object is written under the root and deleted: listing
        a prefix succeeds on a missing bucket or with read-only credentials, a write does not.
        (pyarrow leaves the root's empty folder marker behind, as after any delete.)
        """
        if self.is_local:
            probe = self.root
            while not os.path.exists(probe):
                probe = os.path.dirname(probe)
            if not os.path.isdir(probe) or not os.access(probe, os.W_OK):
                raise StorageError(f"output '{self.uri}' is not a writable directory")
            # os.access answers yes to root everywhere (/proc, a read-only mount): a real
            # file, created and removed, is the answer the run will get.
            try:
                fd, name = tempfile.mkstemp(prefix=".write-probe-", dir=probe)
                os.close(fd)
                os.unlink(name)
            except OSError as exc:
                raise StorageError(f"output '{self.uri}' is not a writable directory: "
                                   f"{one_line(exc)}") from None
            return
        probe = self.path(f".write-probe-{uuid.uuid4().hex}")
        try:
            with self.fs.open_output_stream(probe) as f:
                f.write(b"")
            self.fs.delete_file(probe)
        except Exception as exc:
            raise StorageError(f"storage '{self.uri}' is not writable: {one_line(exc)}") from None

    def exists(self, *parts: str) -> bool:
        info = self.fs.get_file_info(self.path(*parts))
        return info.type != pafs.FileType.NotFound

    def write_bytes(self, relpath: str, data: bytes) -> None:
        """Write a whole file; on a local disk readers never see it half-written."""
        target = self.path(relpath)
        if self.is_local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            # A dot name: readers of a folder of Parquet files (pyarrow, pandas) skip it.
            folder, name = os.path.split(target)
            tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
            fsync_dir(folder)  # the rename itself survives a power loss, not just the bytes
        else:
            # An object-store PUT replaces the object whole; there is no partial state to see.
            def put() -> None:
                with self.fs.open_output_stream(target) as f:
                    f.write(data)

            _with_retries(put, f"writing {self.uri_of(relpath)}")

    def read_bytes(self, relpath: str) -> bytes:
        with self.fs.open_input_stream(self.path(relpath)) as f:
            return f.read()

    def list_files(self, relpath: str) -> list[str]:
        """Every file under the folder ``relpath`` (recursively), as sorted relative paths.

        Names that start with a dot (a local write in progress) are left out; a missing
        folder has no files.
        """
        selector = pafs.FileSelector(self.path(relpath), recursive=True, allow_not_found=True)
        prefix = self.root.rstrip("/") + "/"
        out = []
        for info in self.fs.get_file_info(selector):
            path = info.path.replace(os.sep, "/") if self.is_local else info.path
            if info.type == pafs.FileType.File and not info.base_name.startswith("."):
                out.append(path[len(prefix):] if path.startswith(prefix) else path)
        return sorted(out)

    def delete_dir(self, relpath: str) -> None:
        """Delete the folder ``relpath`` and everything under it; a missing folder is fine."""
        target = self.path(relpath)
        if self.fs.get_file_info(target).type == pafs.FileType.NotFound:
            return
        try:
            self.fs.delete_dir(target)
        except FileNotFoundError:
            pass  # gone meanwhile

    def tune_storage(self) -> tuple[str, pafs.FileSystem | None]:
        """``(storage_path, storage_filesystem)`` for Ray Tune's RunConfig."""
        if self.is_local:
            return self.root, None
        return self.root, self.fs


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type's name when it has none)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _filesystem_from_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    parts = urlsplit(uri)
    if parts.query or parts.fragment:
        # The root is joined with experiment and trial folders; a query string cannot follow.
        raise StorageError(f"storage '{uri}' must not carry '?' options; "
                           "set AWS_ENDPOINT_URL / AWS_REGION in the environment instead")
    if parts.scheme in ("s3", "s3a"):
        bucket = parts.netloc
        if not bucket:
            raise StorageError(f"storage '{uri}' names no bucket (expected s3://bucket/prefix)")
        try:
            return _s3_filesystem(bucket), posixpath.join(bucket, parts.path.strip("/"))
        except Exception as exc:
            raise StorageError(f"storage '{uri}' cannot be opened: {one_line(exc)}") from None
    if parts.scheme in ("gs", "gcs"):
        bucket = parts.netloc
        if not bucket:
            raise StorageError(f"storage '{uri}' names no bucket (expected gs://bucket/prefix)")
        try:
            return _gcs_filesystem(), posixpath.join(bucket, parts.path.strip("/"))
        except Exception as exc:
            raise StorageError(f"storage '{uri}' cannot be opened: {one_line(exc)}") from None
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:
        raise StorageError(f"storage '{uri}' cannot be opened: {one_line(exc)}") from None


def _gcs_filesystem() -> pafs.GcsFileSystem:
    """A GcsFileSystem whose client gives up after ``RETRY_ENV`` seconds.

    pyarrow's default leaves the Google client retrying for 15 minutes, so without a network
    or credentials a report or a run's start hung silently instead of saying why. Google's
    emulator variable ``STORAGE_EMULATOR_HOST`` (fake-gcs-server, say) is honored as the
    Google libraries honor it: that endpoint, no credentials.
    """
    from datetime import timedelta

    limit = timedelta(seconds=max(1.0, _retry_seconds()))
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        ep = urlsplit(emulator if "://" in emulator else f"http://{emulator}")
        return pafs.GcsFileSystem(anonymous=True, scheme=ep.scheme, endpoint_override=ep.netloc,
                                  retry_time_limit=limit)
    return pafs.GcsFileSystem(retry_time_limit=limit)


def _s3_filesystem(bucket: str) -> pafs.S3FileSystem:
    """An S3FileSystem configured from the standard AWS environment variables.

    pyarrow reads the credentials itself but not the endpoint variables, and its region
    lookup for a URI calls AWS; both are settled here.
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if endpoint:
        ep = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        # Any region signs requests for a self-hosted server; us-east-1 is what they expect.
        return pafs.S3FileSystem(endpoint_override=ep.netloc, scheme=ep.scheme,
                                 region=region or "us-east-1")
    if region:
        return pafs.S3FileSystem(region=region)
    # A bucket lives in one region; asking for it avoids redirects on every request.
    return pafs.S3FileSystem(region=pafs.resolve_s3_region(bucket))


def fsync_dir(folder: str) -> None:
    """Flush a local folder's entries (a new or renamed file's name) to disk. POSIX keeps a
    rename or a creation in the folder, not the file: without this a power loss or an OS crash
    can lose a file whose bytes were already fsynced. A no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

