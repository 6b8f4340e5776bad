"""Decoded images bigger than memory comfortably holds: a uint8 file under data/cache/, memory-mapped.

A dataset whose decoded images would take more than `ram_limit()` (1.5 GB, or a quarter of the memory available,
whichever is less; $STUDIO_RAM_IMAGES_MB sets it) is decoded once into a file, image after image, and used through
a memory map: the same (N, 3, S, S) uint8 tensor to every reader, no copy in memory. The file is named by what it
holds (the files' paths, sizes and modification times, the image size and resize method), so loading the same
dataset again at the same size maps it at once, with no decoding. A run's split is written the same way (one file
for the training images, one for validation), so it never gathers a copy of the data in memory either.

Pages of a map that were read count in the process's resident memory until they are dropped. The readers that go
through a whole dataset (core.data.batches.iterate_batches, the fingerprint, the split, core.inspect.trust) call
`note_read`, which drops them every READ_BETWEEN_TRIMS bytes (madvise DONTNEED: the kernel keeps them in its page
cache, so nothing is read from the disk again while there is memory to spare). The maps are private: a write into one
goes to this process's copy of the page, never into the file.

The folder keeps the KEEP_FILES files used last; older ones are deleted (they are this app's, made again on demand).
"""
from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import shutil
import threading
import time
import weakref
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from core.device import available_bytes
from core.errors import DataError
from core.formats import format_bytes

RAM_LIMIT = 3 << 29  # 1.5 GiB: past this (or a quarter of the available memory) decoded images go to a file
READ_BETWEEN_TRIMS = 64 << 20
FAULT_AROUND = 64 << 10  # Linux's fault_around_bytes
KEEP_FILES = 6
ABANDONED_S = 3600.0
FORMAT = "uint8-v1"  # part of every file's name: a change to what a file holds names new files

SUPPORTED = hasattr(mmap, "MAP_PRIVATE") and hasattr(mmap, "MADV_DONTNEED")

_maps: list[tuple[int, int, weakref.ref, Path]] = []  # (first byte's address, end, the map, its file)
_read = 0
_lock = threading.Lock()


def ram_limit() -> int:
    """Bytes of decoded images a dataset may keep in memory."""
    if os.environ.get("STUDIO_RAM_IMAGES_MB"):
        return int(float(os.environ["STUDIO_RAM_IMAGES_MB"]) * 2**20)
    return min(RAM_LIMIT, available_bytes(torch.device("cpu")) // 4)


def cache_dir() -> Path:
    from core.data.archive import data_root

    return data_root() / "cache"


def needs_file(n_images: int, size: int) -> bool:
    """Whether the images go to a file: past ram_limit(), where maps can be private and let go of (not Windows)."""
    return SUPPORTED and n_images * 3 * size * size > ram_limit()


def name_for(parts: Iterable[object]) -> str:
    """A file name for what `parts` (reprs) describe."""
    digest = hashlib.sha256(FORMAT.encode())
    for part in parts:
        digest.update(repr(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def images_in_file(name: str, n_images: int, size: int, rows: Iterable[torch.Tensor], copies: int = 1) -> torch.Tensor:
    """The (n_images, 3, size, size) uint8 images file `name` holds, mapped; written first from `rows` (one
    (3, size, size) uint8 image each, in order) when it is not there, after checking that the disk has room for
    `copies` such files (a dataset: itself and a run's split)."""
    shape = (n_images, 3, size, size)
    path = cache_dir() / f"{name}.u8"
    if not _complete(path, shape, torch.uint8):
        check_disk(copies * _nbytes(shape, torch.uint8), n_images, size)
        _write(path, shape, torch.uint8, (image[None] for image in rows))
        _evict(keep=path)
    return _map(path, shape, torch.uint8)


def rows_together(parts: Iterable[torch.Tensor], n_rows: int, *, to_file: bool) -> torch.Tensor:
    """torch.cat(parts) (n_rows in all, every part (k, ...) of one dtype), never holding the parts and the whole at
    once: filled in memory on the parts' device, or with `to_file` (CPU tensors) written to a file of this process's
    own under the cache folder, mapped, and unlinked at once (its space returns when the tensor goes)."""
    parts = iter(parts)
    first = next(parts)
    shape = (n_rows, *first.shape[1:])
    if not to_file:
        whole = torch.empty(shape, dtype=first.dtype, device=first.device)
        start = 0
        for part in _chain(first, parts):
            whole[start:start + len(part)] = part
            start += len(part)
        if start != n_rows:
            raise ValueError(f"{start} rows, {n_rows} expected")
        return whole
    path = cache_dir() / f"rows-{os.getpid()}-{threading.get_ident()}-{id(first)}.tmp"
    try:
        _write(path, shape, first.dtype, _chain(first, parts))
        return _map(path, shape, first.dtype)
    finally:
        path.unlink(missing_ok=True)


def _chain(first: torch.Tensor, rest: Iterable[torch.Tensor]) -> Iterable[torch.Tensor]:
    yield first
    yield from rest


def is_mapped(images: torch.Tensor) -> bool:
    return _entry(images) is not None


def where_held(images: torch.Tensor) -> str:
    """A sentence on where decoded images are kept and what they take."""
    size = format_bytes(images.nbytes)
    if is_mapped(images):
        return (f"Decoded, these images take {size}, more than memory holds comfortably here, so they are kept in a "
                f"file in the data folder's cache and read from it as training needs them; the same files at the "
                f"same size load from it at once next time.")
    return f"Decoded, these images take {size} of memory."


def take_rows(images: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """images[rows], with a black image where a row is -1: for a mapped tensor, another mapped file written a chunk
    at a time (the images themselves when `rows` is every row in order); for one in memory, the usual copy."""
    rows = np.asarray(rows, dtype=np.int64)
    entry = _entry(images)
    if entry is None:
        return _gather(images, rows)
    if len(rows) == len(images) and np.array_equal(rows, np.arange(len(images))):
        return images
    name = name_for([entry[3].name, tuple(images.shape), images.data_ptr() - entry[0],
                     hashlib.sha256(rows.tobytes()).hexdigest()])
    chunks = (_gather(images, rows[start:start + 1024]) for start in range(0, len(rows), 1024))
    return images_in_file(name, len(rows), images.shape[-1], (image for chunk in chunks for image in chunk))


def _gather(images: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    part = images[torch.as_tensor(np.maximum(rows, 0))]
    part[torch.as_tensor(rows < 0)] = 0
    note_read(part.nbytes, len(part))
    return part


def hash_rows(images: torch.Tensor, digest, chunk: int = 2048) -> None:
    """digest.update with every byte of `images` in order, a chunk at a time (never a copy of the whole)."""
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk].contiguous()
        digest.update(part.numpy())
        note_read(part.nbytes)


def note_read(nbytes: int, rows: int = 1) -> None:
    """Count bytes read from maps, `rows` separate stretches of them; past READ_BETWEEN_TRIMS, drop the pages read
    from every map. Each stretch counts two FAULT_AROUND windows more: reading one page of a mapped file maps the
    pages around it too (Linux's fault-around), so random rows keep several times their bytes resident (27 KB rows:
    about 115 KB each, measured; a run's random batches of 10 KB rows of cached features kept 1 GB of a map
    resident between trims counted by bytes alone)."""
    global _read
    if not _maps:
        return
    with _lock:
        _read += nbytes + rows * 2 * FAULT_AROUND
        if _read < READ_BETWEEN_TRIMS:
            return
        _read = 0
    trim()


def trim() -> None:
    """Drop every map's pages from this process's resident memory (the page cache keeps them)."""
    with _lock:
        live = [(start, end, ref, path) for start, end, ref, path in _maps if ref() is not None]
        _maps[:] = live
    for _, _, ref, _ in live:
        mapped = ref()
        if mapped is not None and not mapped.closed:
            mapped.madvise(mmap.MADV_DONTNEED)


def check_disk(needed: int, n_images: int, size: int) -> None:
    """DataError when the cache folder's disk has not `needed` bytes and 1 GB to spare."""
    folder = cache_dir()
    with _writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
    if needed + (1 << 30) > free:
        raise DataError(f"{n_images:,} images at {size} px need {needed / 2**30:.1f} GB of disk once decoded (more "
                        f"than memory holds comfortably here, so they go to a file in the data folder's cache), and "
                        f"{free / 2**30:.1f} GB are free; choose a smaller image size or free some space.")


def _entry(images: torch.Tensor) -> tuple[int, int, weakref.ref, Path] | None:
    if not _maps or images.device.type != "cpu":
        return None
    address = images.data_ptr()
    return next((entry for entry in _maps if entry[0] <= address < entry[1] and entry[2]() is not None), None)


def _complete(path: Path, shape: tuple[int, ...], dtype: torch.dtype) -> bool:
    try:
        if path.stat().st_size != _nbytes(shape, dtype):
            return False
        os.utime(path)  # used now: the last to be evicted
        return True
    except OSError:
        return False


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size()


def _write(path: Path, shape: tuple[int, ...], dtype: torch.dtype, parts: Iterable[torch.Tensor]) -> None:
    """Write the parts ((k, *shape[1:]) each, in order, shape[0] rows in all) to a file of this process's own, then
    give it its name: a reader sees a whole file or none. A failure to write (a full disk, a folder that cannot be
    written) is a DataError; one in making the parts (an image that cannot be decoded) stays what it is."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    count, row_shape = 0, tuple(shape[1:])
    try:
        with _writing(path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
            out = open(partial, "wb", buffering=1 << 20)
        with out:
            for part in parts:
                if tuple(part.shape[1:]) != row_shape or part.dtype != dtype:
                    raise ValueError(f"rows of {tuple(part.shape[1:])} {part.dtype} for a file of {row_shape} {dtype}")
                with _writing(path.parent):
                    out.write(memoryview(part.detach().cpu().contiguous().view(torch.uint8).numpy()))
                count += len(part)
            with _writing(path.parent):
                out.flush()
        if count != shape[0]:
            raise ValueError(f"{count} rows written, {shape[0]} expected")
        with _writing(path.parent):
            os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def _writing(folder: Path):
    """An OSError inside becomes a DataError saying what to do."""
    try:
        yield
    except OSError as error:
        raise _cannot_write(folder, error) from None


def _cannot_write(folder: Path, error: OSError) -> DataError:
    return DataError(f"Writing decoded images to {folder} failed ({error.strerror or error}); free some space there "
                     "or choose a smaller image size.")


def _evict(keep: Path) -> None:
    """Delete the files used longest ago past KEEP_FILES, and what a process stopped while writing left (a file
    being written changes every second or so: one unchanged for ABANDONED_S is nobody's)."""
    files, now = [], time.time()
    for path in keep.parent.iterdir():
        try:
            changed = path.stat().st_mtime
        except OSError:
            continue
        if path.suffix == ".u8":
            files.append((changed, path))
        elif path.suffix in (".partial", ".tmp") and now - changed > ABANDONED_S:
            path.unlink(missing_ok=True)
    for _, path in sorted(files, reverse=True)[KEEP_FILES:]:
        if path != keep:
            path.unlink(missing_ok=True)  # a process that maps it keeps reading it


def _map(path: Path, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    if _nbytes(shape, dtype) == 0:  # nothing to map
        return torch.empty(shape, dtype=dtype)
    with open(path, "rb") as file:
        mapped = mmap.mmap(file.fileno(), _nbytes(shape, dtype), flags=mmap.MAP_PRIVATE,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE)
    tensor = torch.frombuffer(mapped, dtype=dtype).view(shape)
    with _lock:
        _maps.append((tensor.data_ptr(), tensor.data_ptr() + tensor.nbytes, weakref.ref(mapped), path))
    return tensor
