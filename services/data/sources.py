"""Where a dataset comes from: a folder, archive or data file on the data service's host, or an upload.

Server paths are confined to the operator's allowed roots, because a path names something on *this*
host and a job must not read arbitrary files. Archives come from users, so they are read in full
before use (a truncated upload should fail at submission, not halfway through a job) and extracted
defensively: no member may land outside the destination, links and devices are never created, and
the number and size of files are capped so a small archive cannot fill the disk.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import posixpath
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import IO

from services.common.errors import InvalidArgument, ResourceExhausted
from services.common.logging import get_logger

log = get_logger(__name__)

MAX_FILES = 200_000
MAX_TOTAL_BYTES = 16 * 1024**3

# Suffix -> archive kind, longest suffixes first so ".tar.gz" wins over ".gz".
_ARCHIVE_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".tar.gz", "tar.gz"),
    (".tar.bz2", "tar.bz2"),
    (".tar.xz", "tar.xz"),
    (".tgz", "tar.gz"),
    (".tbz2", "tar.bz2"),
    (".txz", "tar.xz"),
    (".tar", "tar"),
    (".zip", "zip"),
)
ACCEPTED_EXTENSIONS = ".zip, .tar, .tar.gz (.tgz), .tar.bz2, .tar.xz"
# Suffix -> data file format: one file is a whole text or table dataset (services/data/tables.py).
DATA_FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
}
DATA_EXTENSIONS = ", ".join(DATA_FORMATS)
# The upload kind of a single data file (an archive's kind otherwise): stored as sent, not extracted.
FILE_KIND = "file"
# Every tar kind is opened with "r:*": a .tar that is really gzipped still reads; the kind only
# has to be one we know.
_TAR_KINDS = ("tar", "tar.gz", "tar.bz2", "tar.xz")

# Files that operating systems leave behind; never part of a dataset.
_JUNK_NAMES = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})

# What the standard library raises for a damaged archive, whichever layer notices first.
_CORRUPT_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tarfile.TarError,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    lzma.LZMAError,
    OSError,
    ValueError,
)
_COPY_CHUNK = 1024 * 1024


def is_junk_name(name: str) -> bool:
    """True for macOS/Windows leftovers (``__MACOSX``, ``._x``, ``.DS_Store``, ``Thumbs.db``)."""
    return name in _JUNK_NAMES or name.startswith("._")


def is_ignored_name(name: str) -> bool:
    """True for names a dataset never means: junk and hidden files or folders (``.git``, ``.cache``)."""
    return is_junk_name(name) or name.startswith(".")


# --- server paths ----------------------------------------------------------------------------------


def resolve_server_path(path: str, roots: Sequence[Path]) -> Path:
    """The real path of ``path`` when it exists inside one of ``roots`` (symlinks followed).

    The root check comes before the existence check so that a caller cannot probe which paths exist
    outside the roots.
    """
    if not roots:
        raise InvalidArgument(
            "server paths are turned off on this data service: no allowed roots are configured. "
            "The operator can set TRAINERAGENT_DATA_ROOTS (folders separated by ':'), "
            "or upload the data instead (trainer-agent run --data LOCAL_PATH)"
        )
    if not path.strip():
        raise InvalidArgument("the server path is empty: name a folder or archive under the allowed roots")
    resolved_roots = [Path(root).expanduser().resolve() for root in roots]
    resolved = Path(path).expanduser().resolve()
    if not any(resolved.is_relative_to(root) for root in resolved_roots):
        allowed = ", ".join(str(root) for root in resolved_roots)
        raise InvalidArgument(
            f"path {path} is outside the data service's allowed roots ({allowed}); "
            "name a path under one of them, upload the data instead (--data), "
            "or have the operator add the folder to TRAINERAGENT_DATA_ROOTS"
        )
    if not resolved.exists():
        raise InvalidArgument(
            f"path {path} does not exist on the data service's host; check the path or upload the folder"
        )
    return resolved


# --- archives --------------------------------------------------------------------------------------


def archive_kind(filename: str) -> str:
    """The archive kind (zip, tar, tar.gz, tar.bz2, tar.xz) named by a file's extension."""
    lowered = filename.lower()
    for suffix, kind in _ARCHIVE_SUFFIXES:
        if lowered.endswith(suffix):
            return kind
    raise InvalidArgument(
        f"{filename!r} is not an archive this service reads: accepted extensions are {ACCEPTED_EXTENSIONS}; "
        "pack the folder as one of them (or send the folder itself)"
    )


def data_format(filename: str) -> str | None:
    """csv, tsv, jsonl, json or parquet for a data file's name; None for any other name."""
    lowered = filename.lower()
    return next((fmt for suffix, fmt in DATA_FORMATS.items() if lowered.endswith(suffix)), None)


def source_kind(filename: str) -> str:
    """``file`` for a data file (CSV, TSV, JSONL/JSON, Parquet), else the archive kind; InvalidArgument otherwise."""
    if data_format(filename):
        return FILE_KIND
    lowered = filename.lower()
    for suffix, kind in _ARCHIVE_SUFFIXES:
        if lowered.endswith(suffix):
            return kind
    raise InvalidArgument(
        f"{filename!r} is neither a data file nor an archive this service reads: accepted are data files "
        f"({DATA_EXTENSIONS}) and archives ({ACCEPTED_EXTENSIONS}); save the table as CSV or Parquet, "
        "or pack the folder as an archive (or send the folder itself)"
    )


def check_data_file(path: Path, filename: str | None = None) -> int:
    """1 when ``path`` is a non-empty data file (the number of files, like :func:`inspect_archive`)."""
    name = filename or path.name
    if data_format(name) is None:
        raise InvalidArgument(f"{name!r} is not a data file: use one of {DATA_EXTENSIONS}")
    if path.stat().st_size == 0:
        raise InvalidArgument(f"the data file {name} is empty (0 bytes): send it with its header and rows")
    return 1


def place_data_file(path: Path, filename: str, dest: Path) -> Path:
    """A folder ``dest`` holding the data file under its own (sanitised) name: the dataset root."""
    name = PurePosixPath(filename.replace("\\", "/")).name
    if not name or name.startswith(".") or data_format(name) is None:
        fmt = data_format(filename) or "csv"
        name = f"data.{fmt}"
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / name
    if path.resolve() != target.resolve():
        with open(path, "rb") as source, open(target, "wb") as out:
            while chunk := source.read(_COPY_CHUNK):
                out.write(chunk)
    return dest


def inspect_archive(path: Path, kind: str) -> int:
    """The number of regular files in the archive, after reading every byte of it.

    Reading everything (CRCs for zip, every member and the end-of-archive marker for tar) is what
    catches a truncated upload now rather than halfway through a job.
    """
    _check_kind(kind)
    try:
        if kind == "zip":
            return _inspect_zip(path)
        return _inspect_tar(path)
    except _CORRUPT_ERRORS as exc:
        if _is_host_error(exc):
            raise
        raise _corrupt(exc) from exc


def extract_archive(path: Path, kind: str, dest: Path, max_files: int = MAX_FILES,
                    max_total_bytes: int = MAX_TOTAL_BYTES) -> Path:
    """Extract regular files and folders into ``dest`` safely; return ``dest``.

    Members with absolute paths or ``..``, links pointing outside the archive, devices and fifos are
    skipped (logged), never created. Links inside the archive are materialised as copies, so the
    extracted tree holds regular files only. macOS/Windows junk is left out.
    """
    _check_kind(kind)
    dest.mkdir(parents=True, exist_ok=True)
    budget = _Budget(max_files, max_total_bytes)
    try:
        if kind == "zip":
            _extract_zip(path, dest, budget)
        else:
            _extract_tar(path, dest, budget)
    except _CORRUPT_ERRORS as exc:
        if _is_host_error(exc):
            raise
        raise _corrupt(exc) from exc
    return dest


def find_dataset_root(root: Path) -> Path:
    """Descend through single wrapper folders: an archive of ``digits/0/...`` gives ``digits/``.

    A single folder is only a wrapper when it holds folders or data files (``penguins/train.csv``)
    itself; otherwise it is a (lone) class folder and the image loader should say that a second class
    is missing.
    """
    current = root
    while True:
        entries = _visible_entries(current)
        if len(entries) != 1 or not entries[0].is_dir():
            return current
        inner = _visible_entries(entries[0])
        if not any(entry.is_dir() or (entry.is_file() and data_format(entry.name)) for entry in inner):
            return current
        current = entries[0]


def _visible_entries(folder: Path) -> list[Path]:
    return [entry for entry in folder.iterdir() if not is_ignored_name(entry.name)]


def _check_kind(kind: str) -> None:
    if kind not in _TAR_KINDS and kind != "zip":
        raise InvalidArgument(f"unknown archive kind {kind!r}: use one of zip, {', '.join(_TAR_KINDS)}")


def _is_host_error(exc: BaseException) -> bool:
    """An OSError of this host (disk full, permissions) rather than of the archive's bytes.

    Decompressors report bad data as OSError without an errno (bz2, gzip); the host's own failures
    carry one and must not be blamed on the user's archive.
    """
    return isinstance(exc, OSError) and not isinstance(exc, gzip.BadGzipFile) and exc.errno is not None


def _corrupt(exc: BaseException) -> InvalidArgument:
    detail = str(exc) or type(exc).__name__
    return InvalidArgument(f"the archive is truncated or corrupt ({detail}); upload it again or re-create it")


class _Budget:
    """Counts extracted files and bytes against the limits."""

    def __init__(self, max_files: int, max_total_bytes: int) -> None:
        self.max_files = max_files
        self.max_total_bytes = max_total_bytes
        self.files = 0
        self.bytes = 0

    def add_file(self, declared_size: int) -> None:
        """Count one more file; refuse it early when its declared size alone breaks the limit."""
        self.files += 1
        if self.files > self.max_files:
            raise ResourceExhausted(
                f"the archive holds more than {self.max_files} files, the most one dataset may have; "
                "remove files or sample the dataset"
            )
        self._check(self.bytes + declared_size)

    def add_bytes(self, size: int) -> None:
        self.bytes += size
        self._check(self.bytes)

    def _check(self, total: int) -> None:
        if total > self.max_total_bytes:
            raise ResourceExhausted(
                f"the archive unpacks to more than {self.max_total_bytes / 1024**3:.1f} GiB, the most one "
                "dataset may take; shrink the images or sample the dataset"
            )


def _safe_relative(name: str) -> PurePosixPath | None:
    """The member's path relative to the destination, or None when it would escape it."""
    name = name.replace("\\", "/")  # archives made on Windows sometimes use backslashes
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return PurePosixPath(*parts)


def _is_junk_path(relative: PurePosixPath) -> bool:
    return any(is_junk_name(part) for part in relative.parts)


def _write_member(source: IO[bytes], target: Path, budget: _Budget) -> None:
    """Copy one member's bytes to ``target``, counting them (declared sizes can understate)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        while chunk := source.read(_COPY_CHUNK):
            budget.add_bytes(len(chunk))
            out.write(chunk)


def _target_for(dest: Path, member_name: str) -> Path | None:
    """Where a member goes, or None (logged) when it must not be extracted."""
    relative = _safe_relative(member_name)
    if relative is None:
        log.warning("archive_member_skipped", member=member_name, reason="absolute path or '..'")
        return None
    if _is_junk_path(relative):
        return None
    return dest.joinpath(*relative.parts)


def _make_dir(target: Path, member_name: str) -> None:
    try:
        target.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        log.warning("archive_member_skipped", member=member_name, reason=f"path clash: {exc}")


# --- zip -------------------------------------------------------------------------------------------


def _zip_is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _check_not_encrypted(archive: zipfile.ZipFile) -> None:
    if any(info.flag_bits & 0x1 for info in archive.infolist()):
        raise InvalidArgument("the zip archive is password-protected: re-create it without a password")


def _inspect_zip(path: Path) -> int:
    with zipfile.ZipFile(path) as archive:
        _check_not_encrypted(archive)
        bad = archive.testzip()
        if bad is not None:
            raise InvalidArgument(
                f"the archive is truncated or corrupt (member {bad} fails its CRC check); "
                "upload it again or re-create it"
            )
        return sum(1 for info in archive.infolist() if not info.is_dir() and not _zip_is_symlink(info))


def _extract_zip(path: Path, dest: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(path) as archive:
        _check_not_encrypted(archive)
        for info in archive.infolist():
            target = _target_for(dest, info.filename)
            if target is None:
                continue
            if info.is_dir():
                _make_dir(target, info.filename)
                continue
            if _zip_is_symlink(info):
                log.warning("archive_member_skipped", member=info.filename, reason="symbolic link")
                continue
            budget.add_file(info.file_size)
            with archive.open(info) as source:
                _write_or_skip(source, target, info.filename, budget)


def _write_or_skip(source: IO[bytes], target: Path, member_name: str, budget: _Budget) -> None:
    """Write a member; a path clash (a file where a folder should be) skips the member, logged."""
    try:
        _write_member(source, target, budget)
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        log.warning("archive_member_skipped", member=member_name, reason=f"path clash: {exc}")


# --- tar -------------------------------------------------------------------------------------------


def _iter_tar(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Every member, then proof that the archive ended properly.

    tarfile stops quietly at a damaged header or at a cut exactly between members, so we check the
    end-of-archive marker ourselves and read a compressed stream to its end-of-stream marker.
    """
    yield from tar
    fileobj = tar.fileobj
    assert fileobj is not None
    fileobj.seek(tar.offset)
    marker = fileobj.read(tarfile.BLOCKSIZE)
    if len(marker) < tarfile.BLOCKSIZE or marker.count(0) != tarfile.BLOCKSIZE:
        raise tarfile.ReadError("the end-of-archive marker is missing or a header is damaged")
    if isinstance(fileobj, gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile):
        while fileobj.read(_COPY_CHUNK):
            pass


def _inspect_tar(path: Path) -> int:
    count = 0
    with tarfile.open(path, "r:*") as tar:
        for member in _iter_tar(tar):
            if not member.isreg():
                continue
            count += 1
            source = tar.extractfile(member)
            assert source is not None
            while source.read(_COPY_CHUNK):
                pass
    return count


def _tar_link_target(member: tarfile.TarInfo) -> PurePosixPath | None:
    """The archive path a hard or symbolic link points at, or None when it points outside the archive."""
    if member.issym():
        if member.linkname.startswith("/"):
            return None
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), member.linkname))
    else:
        joined = member.linkname
    return _safe_relative(joined)


def _extract_tar(path: Path, dest: Path, budget: _Budget) -> None:
    with tarfile.open(path, "r:*") as tar:
        for member in _iter_tar(tar):
            target = _target_for(dest, member.name)
            if target is None:
                continue
            if member.isdir():
                _make_dir(target, member.name)
            elif member.isreg():
                budget.add_file(member.size)
                source = tar.extractfile(member)
                assert source is not None
                _write_or_skip(source, target, member.name, budget)
            elif member.islnk() or member.issym():
                _extract_tar_link(tar, member, target, budget)
            else:
                log.warning("archive_member_skipped", member=member.name, reason="device or special file")


def _extract_tar_link(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, budget: _Budget) -> None:
    """A link inside the archive becomes a copy of its target; one pointing outside is skipped."""
    if _tar_link_target(member) is None:
        log.warning("archive_member_skipped", member=member.name, reason=f"link to {member.linkname} outside")
        return
    try:
        source = tar.extractfile(member)
    except (KeyError, tarfile.StreamError, RecursionError):  # missing target, or links in a loop
        source = None
    if source is None:
        log.warning("archive_member_skipped", member=member.name, reason=f"link to missing {member.linkname}")
        return
    budget.add_file(0)
    _write_or_skip(source, target, member.name, budget)
