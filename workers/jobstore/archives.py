"""Unpacking an archive nobody vouches for (zip, tar or tar.gz), and writing a folder as a tar.

`unpack` refuses, with an `ArchiveError` naming the member: paths that would land outside
the target folder (`..`, absolute paths, drive letters), symbolic and hard links, device
files, FIFOs and sockets, encrypted or unreadable members, two members with one name, more
than `max_members` entries and more than `max_bytes` unpacked. Sizes are checked twice: what
the headers declare, before a member is written, and the bytes actually written, counted
as they come (headers can lie; a gzip stream is bounded as a whole, tar headers included).
Only regular files and folders are made, with this process's default modes: owners, modes
and times in the archive are ignored. The caller unpacks into a new temporary folder and
removes it on refusal, so nothing half-unpacked stays behind.
"""

from __future__ import annotations

import errno
import gzip
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from pixelscene.errors import PixelsceneError

CHUNK = 1 << 16
TAR_OVERHEAD = 2048  # header and padding bytes a tar member may add to the stream
FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(PixelsceneError):
    """An archive refused: `code` says why (invalid_archive, unsafe_member, archive_too_large),
    `member` names the entry at fault (None when it is the archive as a whole)."""

    def __init__(self, code: str, message: str, member: str | None = None) -> None:
        super().__init__(message)
        self.code, self.member = code, member


def archive_kind(path: Path) -> str | None:
    """The kind of archive from the first bytes (never the name): zip, tar.gz, tar or None."""
    with open(path, "rb") as f:
        head = f.read(265)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):  # a member, or an empty zip's end record
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if head[257:262] == b"ustar":
        return "tar"
    return None


def unpack(archive: Path, dest: Path, max_bytes: int, max_members: int) -> list[str]:
    """Unpack `archive` into the new folder `dest` under the limits.

    Returns:
        The files written, as POSIX paths relative to `dest`, in archive order.

    Raises:
        ArchiveError: the archive is refused (see the module docstring).
        OSError: the disk refused a write for want of space (errno ENOSPC, EDQUOT, EFBIG).
    """
    kind = archive_kind(archive)
    if kind is None:
        raise ArchiveError("invalid_archive", "not a zip, tar.gz or tar archive")
    dest.mkdir()
    writer = _Writer(dest, max_bytes, max_members)
    try:
        if kind == "zip":
            _unpack_zip(archive, writer)
        else:
            _unpack_tar(archive, kind == "tar.gz", writer)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, gzip.BadGzipFile,
            zlib.error, EOFError, NotImplementedError) as e:  # fmt: skip
        where = f" at {writer.current!r}" if writer.current else ""
        raise ArchiveError(
            "invalid_archive", f"corrupt or unsupported {kind} archive{where}: {e}", writer.current
        ) from None
    return writer.files


def _unpack_zip(archive: Path, writer: _Writer) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > writer.max_members:
            raise writer.too_many(infos[writer.max_members].filename)
        declared = sum(info.file_size for info in infos)
        if declared > writer.max_bytes:
            raise ArchiveError(
                "archive_too_large",
                f"the archive declares {declared} bytes unpacked, more than the limit of "
                f"{writer.max_bytes} (PIXELSCENE_DATASET_MAX_BYTES)",
            )
        for info in infos:
            writer.start(info.filename)
            # The Unix mode, where a Unix tool made the zip; many leave the type bits out.
            mode = info.external_attr >> 16
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise writer.refuse(_file_type(mode))
            if info.flag_bits & 0x1:
                raise writer.refuse("is encrypted")
            if info.is_dir():
                writer.directory()
            else:
                with zf.open(info) as source:
                    writer.file(info.file_size, source)


def _unpack_tar(archive: Path, gzipped: bool, writer: _Writer) -> None:
    limit = writer.max_bytes + TAR_OVERHEAD * (writer.max_members + 2)
    with open(archive, "rb") as raw, gzip.GzipFile(fileobj=raw) if gzipped else raw as stream:
        bounded = _Bounded(stream, limit)
        # Stream mode: one pass over the (decompressed) bytes, no seeking back.
        with tarfile.open(fileobj=bounded, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                writer.start(member.name)
                if member.issym() or member.islnk():
                    raise writer.refuse(f"is a link (to {member.linkname!r})")
                if member.ischr() or member.isblk() or member.isfifo():
                    raise writer.refuse("is a device file or FIFO")
                if member.isdir():
                    writer.directory()
                elif member.isreg():
                    source = tar.extractfile(member)
                    assert source is not None  # a regular file always has one
                    writer.file(member.size, source)
                else:
                    raise writer.refuse(f"has an unsupported type ({member.type!r})")


def _file_type(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return "is a device file, FIFO or socket"
    return f"has an unsupported file type ({stat.S_IFMT(mode):o})"


class _Writer:
    """Makes the folders and files of one archive under `dest`, counting members and bytes."""

    def __init__(self, dest: Path, max_bytes: int, max_members: int) -> None:
        self.dest, self.root = dest, dest.resolve()
        self.max_bytes, self.max_members = max_bytes, max_members
        self.members = self.total = 0
        self.files: list[str] = []
        self.current: str | None = None
        self.parts: tuple[str, ...] = ()

    def start(self, name: str) -> None:
        """Begin member `name`: count it and check its path."""
        self.current = name
        self.members += 1
        if self.members > self.max_members:
            raise self.too_many(name)
        if "\x00" in name:
            raise self.refuse("has a NUL character in its name")
        posix = name.replace("\\", "/")
        if posix.startswith("/") or _DRIVE.match(posix):
            raise self.refuse("has an absolute path")
        self.parts = tuple(part for part in posix.split("/") if part not in ("", "."))
        if ".." in self.parts:
            raise self.refuse("has '..' in its path: it would land outside the dataset folder")

    def refuse(self, why: str) -> ArchiveError:
        return ArchiveError("unsafe_member", f"archive member {self.current!r} {why}", self.current)

    def too_many(self, name: str) -> ArchiveError:
        return ArchiveError(
            "archive_too_large",
            f"the archive has more than {self.max_members} members "
            f"(PIXELSCENE_DATASET_MAX_MEMBERS); {name!r} is one too many",
            name,
        )

    def _too_large(self, what: str) -> ArchiveError:
        return ArchiveError(
            "archive_too_large",
            f"the archive unpacks to more than {self.max_bytes} bytes "
            f"(PIXELSCENE_DATASET_MAX_BYTES); {what} at member {self.current!r}",
            self.current,
        )

    def _path(self) -> Path:
        path = self.dest.joinpath(*self.parts)
        # Nothing here makes links, so this only holds what `start` checked; kept as a guard.
        if not path.parent.resolve().is_relative_to(self.root):
            raise self.refuse("would land outside the dataset folder")
        return path

    def directory(self) -> None:
        if self.parts:
            self._make(lambda: self.dest.joinpath(*self.parts).mkdir(parents=True, exist_ok=True))

    def file(self, declared: int, source: BinaryIO) -> None:
        if not self.parts:
            raise self.refuse("has no file name")
        if self.total + declared > self.max_bytes:
            raise self._too_large(f"{declared} bytes declared")
        self._make(lambda: self.dest.joinpath(*self.parts[:-1]).mkdir(parents=True, exist_ok=True))
        path = self._path()
        try:
            out = open(path, "xb")
        except (FileExistsError, IsADirectoryError):
            raise self.refuse("names a file or folder already unpacked") from None
        except OSError as e:
            raise self._unwritable(e) from None
        with out:
            while chunk := source.read(CHUNK):
                self.total += len(chunk)
                if self.total > self.max_bytes:
                    raise self._too_large("counted while unpacking")
                out.write(chunk)
        self.files.append("/".join(self.parts))

    def _make(self, make: Callable[[], None]) -> None:
        try:
            make()
        except (FileExistsError, NotADirectoryError):
            raise self.refuse("needs a folder where a file was already unpacked") from None
        except OSError as e:
            raise self._unwritable(e) from None

    def _unwritable(self, e: OSError) -> Exception:
        """A full disk stays an OSError (the API answers 507); any other refusal names the
        member (a name too long for this file system, say)."""
        if e.errno in FULL_DISK:
            return e
        return self.refuse(f"cannot be written here ({e.strerror})")


class _Bounded:
    """A read-only stream that raises once more than `limit` bytes have been read from it."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self.stream, self.left, self.limit = stream, limit, limit

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size if size >= 0 else self.left + 1)
        self.left -= len(data)
        if self.left < 0:
            raise ArchiveError(
                "archive_too_large",
                f"the archive's stream unpacks to more than {self.limit} bytes "
                "(PIXELSCENE_DATASET_MAX_BYTES, with room for tar headers)",
            )
        return data


def tar_chunks(folder: Path) -> Iterator[bytes]:
    """`folder`'s regular files (not links) as an uncompressed tar, in pieces as it is
    written: names relative to `folder`, modes 0644, no owners."""
    sink = _Sink()
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for path in sorted(folder.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            info = tarfile.TarInfo("/".join(path.relative_to(folder).parts))
            info.size, info.mode, info.mtime = path.stat().st_size, 0o644, int(path.stat().st_mtime)
            with open(path, "rb") as f:
                tar.addfile(info, f)
            yield sink.take()
    yield sink.take()


class _Sink:
    """A write-only stream whose bytes are taken out in pieces."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out
