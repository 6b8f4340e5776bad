"""Safe extraction of an uploaded .zip dataset into its own folder under the data folder.

Nothing is ever written outside that folder: entries with absolute paths, drive letters or `..` are skipped,
symbolic links are skipped, and sizes are counted while extracting (declared sizes can lie), so a zip bomb
is stopped at the cap, not after filling the disk. A refused archive leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from core.errors import DataError

CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    max_total_bytes: int = 8 << 30  # uncompressed size of everything extracted
    max_file_bytes: int = 256 << 20  # uncompressed size of one entry
    max_entries: int = 200_000
    max_ratio: float = 200.0  # uncompressed / compressed, per entry: far beyond what real images reach


@dataclass
class Extraction:
    folder: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (entry name, reason)
    n_files: int = 0


def data_root() -> Path:
    """Where uploaded and downloaded datasets live: $STUDIO_DATA_DIR, else data/ beside app.py."""
    return Path(os.environ.get("STUDIO_DATA_DIR") or Path(__file__).resolve().parent.parent / "data")


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


def _copy_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limits: ArchiveLimits,
                total: int) -> int:
    """Write one entry to `target`, counting the bytes as they come (declared sizes can lie); returns the
    archive's running total of uncompressed bytes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with archive.open(info) as entry, open(target, "wb") as out:
        for chunk in iter(lambda: entry.read(CHUNK), b""):
            written += len(chunk)
            total += len(chunk)
            if written > limits.max_file_bytes:
                raise DataError(f"'{info.filename}' is larger than {limits.max_file_bytes >> 20} MB "
                                "uncompressed, the limit for one file.")
            if total > limits.max_total_bytes:
                raise DataError(f"The archive holds more than {limits.max_total_bytes >> 30} GB "
                                "uncompressed, the limit for one dataset.")
            if written > 1 << 20 and written > limits.max_ratio * max(info.compress_size, 1):
                raise DataError(f"'{info.filename}' expands more than {limits.max_ratio:.0f} times: "
                                "this looks like a zip bomb, so the archive is refused.")
            out.write(chunk)
    return total


def extract_zip(source: Path | BinaryIO, destination: Path, limits: ArchiveLimits = ArchiveLimits()) -> Extraction:
    """Extract a zip (path or file object) into `destination`, which must not exist yet; DataError if refused."""
    destination = Path(destination)
    if destination.exists():
        raise FileExistsError(destination)
    try:
        archive = zipfile.ZipFile(source)
    except zipfile.BadZipFile:
        raise DataError("This file is not a zip archive (or is damaged). Upload a .zip of your image folders.") \
            from None
    staging = destination.with_name(f".{destination.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    result = Extraction(destination)
    try:
        with archive:
            entries = archive.infolist()
            if len(entries) > limits.max_entries:
                raise DataError(f"The archive holds {len(entries):,} entries; the limit is {limits.max_entries:,}.")
            if any(info.flag_bits & 0x1 for info in entries):
                raise DataError("The archive is encrypted (password-protected). Zip the images without a password.")
            total = 0
            for info in entries:
                if info.is_dir():
                    continue
                relative = _safe_relative(info.filename)
                if relative is None:
                    result.skipped.append((info.filename, "its path points outside the dataset folder"))
                    continue
                if _is_symlink(info):
                    result.skipped.append((info.filename, "symbolic links are not followed"))
                    continue
                total = _copy_entry(archive, info, staging.joinpath(*relative.parts), limits, total)
                result.n_files += 1
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"The archive is damaged or truncated ({error}). Make the zip again and re-upload it.") \
            from None
    except NotImplementedError as error:  # e.g. Deflate64 or another compression Python cannot read
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"The archive uses a compression method this app cannot read ({error}). Make it with "
                        "standard zip (deflate) compression.") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.replace(staging, destination)
    return result
