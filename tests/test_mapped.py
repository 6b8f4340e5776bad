"""Data past what memory holds comfortably (core.data.mapped): decoded once into a file under the data folder, mapped,
found again by what it holds, split and cached without a copy in memory, and trained on exactly as in memory."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import mapped
from core.data.batches import iterate_batches
from core.data.load import Split, load_source
from core.errors import DataError


def write_digits(root: Path, count: int = 300) -> Path:
    """The first `count` handwritten digits (sklearn) as greyscale PNGs in class folders."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(count):
        folder = root / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.rint(digits.images[i] * (255 / 16)).astype(np.uint8), mode="L").save(folder / f"{i}.png")
    return root


@pytest.fixture
def digits_folder(tmp_path) -> Path:
    return write_digits(tmp_path / "digits")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A data folder of this test's own, so its cache starts empty."""
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data" / "cache"


def in_file(monkeypatch, yes: bool) -> None:
    monkeypatch.setenv("STUDIO_RAM_IMAGES_MB", "0" if yes else "100000")


def cache_files(cache: Path) -> dict[str, int]:
    return {path.name: path.stat().st_ino for path in cache.glob("*.u8")} if cache.exists() else {}


def test_images_past_the_memory_limit_are_the_same_images_from_a_file_found_again_by_what_it_holds(
        digits_folder, cache, monkeypatch):
    in_file(monkeypatch, False)
    in_memory = load_source(str(digits_folder), 32)
    assert not mapped.is_mapped(in_memory.images) and not cache_files(cache)

    in_file(monkeypatch, True)
    from_file = load_source(str(digits_folder), 32)
    assert mapped.is_mapped(from_file.images)
    assert torch.equal(from_file.images, in_memory.images) and from_file.item_names == in_memory.item_names
    assert from_file.fingerprint() == in_memory.fingerprint()
    first = cache_files(cache)
    assert len(first) == 1 and (cache / next(iter(first))).stat().st_size == 300 * 3 * 32 * 32

    again = load_source(str(digits_folder), 32)  # the same file, not a new decoding
    assert cache_files(cache) == first and torch.equal(again.images, in_memory.images)

    other_size = load_source(str(digits_folder), 24)  # another size is another file
    assert len(cache_files(cache)) == 2 and other_size.images.shape[-1] == 24

    changed = sorted((digits_folder / "3").glob("*.png"))[0]  # a file rewritten: its image decoded anew
    from PIL import Image
    Image.new("L", (8, 8), 255).save(changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    after = load_source(str(digits_folder), 32)
    row = after.item_names.index(str(Path("3") / changed.name))
    assert len(cache_files(cache)) == 3 and bool((after.images[row] == 255).all())


def test_a_damaged_cache_file_is_decoded_again(digits_folder, cache, monkeypatch):
    in_file(monkeypatch, True)
    first = load_source(str(digits_folder), 32).images.clone()
    (name,) = cache_files(cache)
    with open(cache / name, "r+b") as file:
        file.truncate(1000)  # a file cut short (a full disk, a copy interrupted)
    assert torch.equal(load_source(str(digits_folder), 32).images, first)
    assert (cache / name).stat().st_size == 300 * 3 * 32 * 32


def test_the_split_of_a_mapped_dataset_is_two_mapped_files_holding_the_same_rows(digits_folder, cache, monkeypatch):
    in_file(monkeypatch, False)
    expected = Split.from_dataset(load_source(str(digits_folder), 32), 0.2, 0)
    in_file(monkeypatch, True)
    split = Split.from_dataset(load_source(str(digits_folder), 32), 0.2, 0)
    assert mapped.is_mapped(split.train_images) and mapped.is_mapped(split.valid_images)
    assert torch.equal(split.train_images, expected.train_images)
    assert torch.equal(split.valid_images, expected.valid_images)
    assert np.array_equal(split.valid_ids, expected.valid_ids) and len(cache_files(cache)) == 3


def resident_file_mb() -> float:
    """Pages of mapped files this process holds (Linux's RssFile)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no RssFile here")


def test_reading_a_mapped_dataset_through_does_not_keep_it_resident(cache, monkeypatch):
    monkeypatch.setattr(mapped, "READ_BETWEEN_TRIMS", 8 << 20)  # a 64 MB file: several trims in one pass
    n, size = 2400, 96
    generator = torch.Generator().manual_seed(0)
    rows = (torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=generator) for _ in range(n))
    images = mapped.images_in_file("test-resident", n, size, rows)
    labels = torch.zeros(n, dtype=torch.long)
    mapped.trim()
    before = resident_file_mb()
    total = sum(float(x.mean()) for x, _ in iterate_batches(images, labels, 64, shuffle=True, generator=generator))
    assert total != 0.0
    grown = resident_file_mb() - before
    assert grown < 0.6 * images.nbytes / 2**20, f"{grown:.0f} MB of a {images.nbytes / 2**20:.0f} MB file resident"
    touched = images.sum()  # a plain read of everything stays resident until trimmed: what the trim is for
    assert int(touched) > 0 and resident_file_mb() - before > 0.9 * images.nbytes / 2**20
    mapped.trim()
    assert resident_file_mb() - before < 0.1 * images.nbytes / 2**20


def test_rows_together_is_cat_in_memory_and_from_a_file(cache):
    parts = [torch.arange(12, dtype=torch.bfloat16).view(3, 2, 2) + k for k in range(4)]
    expected = torch.cat(parts)
    assert torch.equal(mapped.rows_together(iter(parts), 12, to_file=False), expected)
    from_file = mapped.rows_together(iter(parts), 12, to_file=True)
    assert mapped.is_mapped(from_file) and torch.equal(from_file, expected)
    assert not list(cache.iterdir())  # the file is unlinked at once: its space goes with the tensor
    with pytest.raises(ValueError):
        mapped.rows_together(iter(parts), 13, to_file=True)


def test_only_the_files_used_last_are_kept(cache):
    def image(k):
        return [torch.full((3, 4, 4), k, dtype=torch.uint8)]

    for k in range(mapped.KEEP_FILES):
        mapped.images_in_file(f"file{k}", 1, 4, image(k))
        os.utime(cache / f"file{k}.u8", (k, k))  # file0 the oldest
    for name in (".old.123.4.partial", "rows-123-4-5.tmp", ".new.124.4.partial"):  # what stopped writers left
        (cache / name).write_bytes(b"x")
    for name in (".old.123.4.partial", "rows-123-4-5.tmp"):
        os.utime(cache / name, (1, 1))
    assert int(mapped.images_in_file("file0", 1, 4, []).max()) == 0  # used again (nothing decoded): now the newest
    for k in (100, 101):
        mapped.images_in_file(f"file{k}", 1, 4, image(k))
    assert sorted(path.stem for path in cache.glob("*.u8")) == sorted(
        f"file{k}" for k in [0, *range(3, mapped.KEEP_FILES), 100, 101])
    assert [path.name for path in cache.glob("*.partial")] == [".new.124.4.partial"]  # maybe still being written
    assert not list(cache.glob("*.tmp"))


def test_a_disk_too_small_for_the_decoded_images_is_a_sentence(cache):
    with pytest.raises(DataError, match="GB of disk once decoded"):
        mapped.check_disk(10**9 * 3 * 512 * 512, 10**9, 512)


def test_a_run_on_images_from_a_file_trains_exactly_as_in_memory(digits_folder, cache, monkeypatch, tmp_path):
    """The whole recipe (cached frozen phase, late stages on cached early outputs, both kept in files too, and the
    predictions) on EfficientNet-Lite0 at 32 px: every epoch's losses and accuracy the same to the last digit."""
    from core.net import stages
    from core.runs.folder import RunFolder
    from core.train.__main__ import main

    monkeypatch.setattr(stages, "ALL_BUDGET_S", 0.0)  # the late stages, as on a big dataset
    rows, cuts = {}, {}
    for where in ("memory", "file"):
        in_file(monkeypatch, where == "file")
        assert main(["--data", str(digits_folder), "--size", "32", "--freeze-epochs", "1", "--epochs", "1", "--seed",
                     "0", "--runs-dir", str(tmp_path / "runs"), "--name", where]) == 0
        rows[where] = [{key: row[key] for key in ("phase", "train_loss", "valid_loss", "accuracy")}
                       for row in RunFolder(tmp_path / "runs" / where).read_metrics().epochs]
        cuts[where] = RunFolder(tmp_path / "runs" / where).recipe()["late_cut"]
    assert cuts["file"] == cuts["memory"]
    assert [row["phase"] for row in rows["file"]] == ["frozen", "late"] and rows["file"] == rows["memory"]
    assert len(cache_files(cache)) == 3  # the dataset, its training part, its validation part


def test_a_cache_folder_that_cannot_be_written_is_a_sentence(digits_folder, cache, monkeypatch):
    in_file(monkeypatch, True)
    cache.parent.mkdir(parents=True)
    cache.write_text("a file where the folder should be")
    with pytest.raises(DataError, match="Writing decoded images to .* failed"):
        load_source(str(digits_folder), 32)


def test_an_image_that_cannot_be_read_while_decoding_into_a_file_is_not_blamed_on_the_disk(cache):
    def rows():
        yield torch.zeros((3, 4, 4), dtype=torch.uint8)
        raise FileNotFoundError(2, "No such file or directory", "gone.png")  # removed since the health check

    with pytest.raises(FileNotFoundError):
        mapped.images_in_file("gone", 2, 4, rows())
    assert not list(cache.iterdir())  # nothing half-written left
