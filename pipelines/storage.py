"""Where an experiment's files live: a local directory or an object store, through pyarrow.

Tune's storage_path, trial checkpoints and the Parquet results all go through one ``Storage``.
"""

from __future__ import annotations

import os
import posixpath
import uuid

import pyarrow.fs as pafs


class StorageError(ValueError):
    """A storage URI that cannot be used; the message is one line."""


class Storage:
    """A root folder on a pyarrow filesystem.

    Parameters
    ----------
    uri : str
        A local path (relative or absolute) or a URI such as ``s3://bucket/prefix``.
    """

    def __init__(self, uri: str):
        self.uri = uri
        self.is_local = "://" not in uri or uri.startswith("file://")
        if self.is_local:
            path = uri[len("file://"):] if uri.startswith("file://") else uri
            self.fs: pafs.FileSystem = pafs.LocalFileSystem()
            self.root = os.path.abspath(os.path.expanduser(path))
        else:
            try:
                self.fs, self.root = _filesystem_from_uri(uri)
            except Exception as exc:
                raise StorageError(f"storage '{uri}' cannot be opened: {exc}") from None
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
        """Fail early, with one line, if nothing can be written under the root."""
        if self.is_local:
            probe = self.root
            while not os.path.exists(probe):
                probe = os.path.dirname(probe)
            if not os.path.isdir(probe) or not os.access(probe, os.W_OK):
                raise StorageError(f"output '{self.uri}' is not a writable directory")
            return
        try:
            self.fs.get_file_info(self.root)
        except Exception as exc:
            raise StorageError(f"storage '{self.uri}' cannot be reached: {exc}") from None

    def exists(self, *parts: str) -> bool:
        info = self.fs.get_file_info(self.path(*parts))
        return info.type != pafs.FileType.NotFound

    def makedirs(self, *parts: str) -> None:
        self.fs.create_dir(self.path(*parts), recursive=True)

    def write_bytes(self, relpath: str, data: bytes) -> None:
        """Write a whole file; on a local disk readers never see it half-written."""
        target = self.path(relpath)
        if self.is_local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = f"{target}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        else:
            # An object-store PUT replaces the object whole; there is no partial state to see.
            with self.fs.open_output_stream(target) as f:
                f.write(data)

    def read_bytes(self, relpath: str) -> bytes:
        with self.fs.open_input_stream(self.path(relpath)) as f:
            return f.read()

    def tune_storage(self) -> tuple[str, pafs.FileSystem | None]:
        """``(storage_path, storage_filesystem)`` for Ray Tune's RunConfig."""
        if self.is_local:
            return self.root, None
        return self.root, self.fs


def _filesystem_from_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    if uri.startswith("s3://"):
        # An S3-compatible server other than AWS (MinIO, moto, Ceph) is named by the standard
        # AWS_ENDPOINT_URL variable, which pyarrow does not read on its own.
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        bucket_path = uri[len("s3://"):]
        kwargs = {}
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs["endpoint_override"] = host or scheme
            kwargs["scheme"] = scheme if host else "https"
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        return pafs.S3FileSystem(**kwargs), bucket_path
    return pafs.FileSystem.from_uri(uri)
