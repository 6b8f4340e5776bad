"""Safe extraction of an uploaded .zip dataset into its own folder under the data folder.

Nothing is ever written outside that folder: entries with absolute paths, drive letters or `..` are skipped,
symbolic links are skipped, and sizes are counted while extracting (declared sizes can lie), so a zip bomb
is stopped at the cap, not after filling the disk. An entry the file system cannot hold as named (a name
twice, a file where a folder of the same name is needed, a name too long, nesting deeper than MAX_DEPTH) is
skipped with its reason; the first entry of a name wins. A refused archive leaves nothing behind.

Two processes may unpack the same zip at once (two browser tabs, the app and the command line): each unpacks
into a private temporary folder beside the destination and renames it into place whole, so the destination
only ever appears complete, and the slower one keeps the folder that won. What was skipped is recorded in the
folder (UNPACKED_RECORD, a hidden file every layout ignores), so a folder unpacked earlier still says it.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from core.data.layouts import MAX_DEPTH
from core.data.sources import UNPACKED_RECORD, source_label
from core.errors import DataError

CHUNK = 1 << 20
# UNPACKED_RECORD: {"skipped": [[entry, reason], ...], "n_files": N, "name": the zip's own file name}, written
# before the rename; core.data.sources owns its name, since source_label reads the zip's name from it.
STALE_SECONDS = 3600  # a temporary folder this old was left by a killed process (8 GB unpacks in minutes)
NAME_ERRORS = {  # errno of an entry's mkdir/open -> why the entry is skipped; any other OSError refuses the archive
    errno.ENAMETOOLONG: "its name is longer than the file system allows",
    errno.ENOTDIR: "one of its folders has the name of a file that came earlier in the archive",
    errno.EISDIR: "a folder of the same name came earlier in the archive",
    errno.EILSEQ: "its name is not allowed on this file system",
    errno.EINVAL: "its name is not allowed on this file system",
}


@dataclass(frozen=True)
class ArchiveLimits:
    max_total_bytes: int = 8 << 30  # uncompressed size of everything extracted
    max_file_bytes: int = 256 << 20  # uncompressed size of one entry (core.data.health caps one image file the same)
    max_entries: int = 200_000
    max_ratio: float = 200.0  # uncompressed / compressed, per entry: far beyond what real images reach


@dataclass
class Extraction:
    folder: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (entry name, reason)
    n_files: int = 0
    name: str = ""  # the zip's own file name, as the person knows it ("My pets.zip")


def data_root() -> Path:
    """Where uploaded and downloaded datasets live: $STUDIO_DATA_DIR, else data/ beside app.py."""
    return Path(os.environ.get("STUDIO_DATA_DIR") or Path(__file__).resolve().parents[2] / "data")


def _safe_relative(name: str) -> PurePosixPath | None:
    """The entry's path inside the dataset folder, or None when it would point outside it."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return PurePosixPath(*parts)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def archive_name(stem: str, data: bytes | None = None, path: Path | None = None) -> str:
    """A folder name for an archive: its readable stem plus a content hash, so the same zip is extracted once."""
    digest = hashlib.sha256()
    if data is not None:
        digest.update(data)
    else:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                digest.update(chunk)
    safe = re.sub(r"[^\w.-]+", "-", stem, flags=re.UNICODE).strip(".-")[:60] or "dataset"
    return f"{safe}-{digest.hexdigest()[:10]}"


def _entry_problem(info: zipfile.ZipInfo) -> tuple[PurePosixPath | None, str | None]:
    """(where the entry goes inside the dataset folder, None), or (None, why it is skipped), before writing."""
    if not info.filename:
        return None, "it has no name"
    relative = _safe_relative(info.filename)
    if relative is None:
        return None, "its path points outside the dataset folder"
    if _is_symlink(info):
        return None, "symbolic links are not followed"
    if len(relative.parts) > MAX_DEPTH + 1:
        return None, f"nested more than {MAX_DEPTH} folders deep"
    return relative, None


def _create(target: Path):
    """Open a new file for the entry, making its folders; the reason in words when the file system cannot hold
    it as named. "x" mode never overwrites: a second entry of a name (or of the same name in another letter case,
    on a file system that ignores case) is found here."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return open(target, "xb"), None
    except FileExistsError:
        if target.is_dir():
            return None, NAME_ERRORS[errno.EISDIR]
        if target.exists():
            return None, "it appears twice in the archive; the first copy was kept"
        return None, NAME_ERRORS[errno.ENOTDIR]  # mkdir met a file where one of its folders goes
    except OSError as error:
        if error.errno in NAME_ERRORS:
            return None, NAME_ERRORS[error.errno]
        raise


def _copy_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, out: BinaryIO, limits: ArchiveLimits,
                total: int) -> int:
    """Copy one entry into `out`, counting the bytes as they come (declared sizes can lie); returns the
    archive's running total of uncompressed bytes."""
    written = 0
    with archive.open(info) as entry:
        for chunk in iter(lambda: entry.read(CHUNK), b""):
            written += len(chunk)
            total += len(chunk)
            if written > limits.max_file_bytes:
                raise DataError(f"The entry '{info.filename}' is larger than {limits.max_file_bytes >> 20} MB "
                                "uncompressed, the limit for one file.")
            if total > limits.max_total_bytes:
                raise DataError(f"The archive holds more than {limits.max_total_bytes >> 30} GB "
                                "uncompressed, the limit for one dataset.")
            if written > 1 << 20 and written > limits.max_ratio * max(info.compress_size, 1):
                raise DataError(f"The entry '{info.filename}' expands more than {limits.max_ratio:.0f} times: "
                                "this looks like a zip bomb, so the archive is refused.")
            out.write(chunk)
    return total


def _extract_into(archive: zipfile.ZipFile, staging: Path, limits: ArchiveLimits) -> Extraction:
    result = Extraction(staging)
    entries = archive.infolist()
    if len(entries) > limits.max_entries:
        raise DataError(f"The archive holds {len(entries):,} entries; the limit is {limits.max_entries:,}.")
    if any(info.flag_bits & 0x1 for info in entries):
        raise DataError("The archive is encrypted (password-protected). Zip the images without a password.")
    total = 0
    for info in entries:
        if info.filename.endswith("/"):  # a folder entry (ZipInfo.is_dir fails on an empty name)
            continue
        relative, problem = _entry_problem(info)
        out = None
        if relative is not None:
            out, problem = _create(staging.joinpath(*relative.parts))
        if out is None:
            result.skipped.append((info.filename, problem))
            continue
        with out:
            total = _copy_entry(archive, info, out, limits, total)
        result.n_files += 1
    return result


def _write_record(folder: Path, extraction: Extraction) -> None:
    with open(folder / UNPACKED_RECORD, "w", encoding="utf-8") as f:
        json.dump({"skipped": extraction.skipped, "n_files": extraction.n_files, "name": extraction.name}, f,
                  ensure_ascii=False)


def read_record(folder: Path) -> Extraction:
    """What unpacking recorded in a complete folder (an empty record for a folder unpacked before records; the
    name then comes from the folder's, without its hash)."""
    fallback = source_label(str(folder)).removesuffix(" (uploaded)")
    try:
        record = json.loads((folder / UNPACKED_RECORD).read_text(encoding="utf-8"))
        return Extraction(folder, [(str(e), str(r)) for e, r in record["skipped"]], int(record["n_files"]),
                          str(record.get("name") or fallback))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return Extraction(folder, name=fallback)


def unpacked_datasets() -> list[Extraction]:
    """Every zip unpacked under the data folder, newest first, each with its record (its name, what it skipped),
    so a dataset uploaded once is offered again without uploading it again."""
    try:
        folders = [p for p in (data_root() / "uploads").iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    return [read_record(p) for p in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True)]


def _disk_error(error: OSError) -> DataError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DataError("There is not enough disk space to unpack the archive; free some space and try again.")
    return DataError(f"The archive could not be unpacked into the data folder ({error.strerror or error}); check "
                     "that the data folder is writable and try again.")


def extract_zip(source: Path | BinaryIO, destination: Path, limits: ArchiveLimits = ArchiveLimits(),
                name: str = "") -> Extraction:
    """Extract a zip (path or file object) into `destination`, which must not exist yet, recording `name` (the
    zip's file name) with it; DataError if refused, FileExistsError if the destination exists (or appeared
    meanwhile: another process unpacked it first)."""
    destination = Path(destination)
    if destination.exists():
        raise FileExistsError(destination)
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, EOFError, ValueError):
        raise DataError("This file is not a zip archive (or is damaged). Upload a .zip of your image folders.") \
            from None
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".partial"))
    except OSError as error:
        archive.close()
        raise _disk_error(error) from None
    try:
        with archive:
            result = _extract_into(archive, staging, limits)
        result.name = name
        _write_record(staging, result)
        os.rename(staging, destination)  # atomic: the destination appears complete, or not at all
    except DataError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"The archive is damaged or truncated ({error}). Make the zip again and re-upload it.") \
            from None
    except NotImplementedError as error:  # e.g. Deflate64 or another compression Python cannot read
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"The archive uses a compression method this app cannot read ({error}). Make it with "
                        "standard zip (deflate) compression.") from None
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        if destination.is_dir():  # the rename lost a race: another process put a complete copy there first
            raise FileExistsError(destination) from None
        raise _disk_error(error) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.folder = destination
    return result


def remove_stale(folder: Path, max_age: float = STALE_SECONDS) -> None:
    """Delete temporary folders (`.NAME.*.partial`) that a killed process left in `folder` over `max_age` ago.
    They are hidden, so no scan ever takes one for a dataset; this only gives their space back."""
    now = time.time()
    try:
        stale = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".partial")
                 and now - p.lstat().st_mtime > max_age]
    except OSError:
        return
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)


def unpack(source: Path | bytes, stem: str, limits: ArchiveLimits = ArchiveLimits(),
           file_name: str | None = None) -> Extraction:
    """A zip (a path, or an upload's bytes) unpacked once into data_root()/uploads/<stem>-<hash of its content>,
    remembering `file_name` (default: the path's name, or `stem`.zip) as the name people know it by: a complete
    folder unpacked earlier is reused with what its unpacking skipped, a race with another process unpacking the
    same zip ends with both using one folder; DataError (one sentence) if the zip is refused."""
    if isinstance(source, bytes):
        file_name = file_name or f"{stem}.zip"
        name, opened = archive_name(stem, data=source), io.BytesIO(source)
    else:
        source = Path(source)
        try:
            if not stat.S_ISREG(os.stat(source).st_mode):  # a FIFO would block the first read forever
                raise DataError(f"{source} is not a file; give a .zip file or a folder of images.")
            name = archive_name(stem, path=source)
        except OSError as error:
            raise DataError(f"{source} cannot be read ({error.strerror or error}).") from None
        opened, file_name = source, file_name or source.name
    uploads = data_root() / "uploads"
    folder = uploads / name
    if folder.is_dir():
        return read_record(folder)
    try:
        uploads.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _disk_error(error) from None
    remove_stale(uploads)
    try:
        return extract_zip(opened, folder, limits, name=file_name)
    except FileExistsError:  # another process finished first; its folder is complete
        return read_record(folder)
