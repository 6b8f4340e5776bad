"""Bringing your own images: every layout, every kind of bad input, and nothing written outside the data folder."""
import io
import json
import os
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.data.__main__ import main as data_main
from core.data.archive import UNPACKED_RECORD, ArchiveLimits, extract_zip
from core.data.augment import Augment, preview
from core.data.health import check_image
from core.data.images import decode_image
from core.data.layouts import scan_folder
from core.data.load import inspect_source, load_source, resolve_folder
from core.errors import DataError
from tests.conftest import write_image_folder


def png_bytes(colour=(200, 30, 30), size=(12, 12), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "data"
    monkeypatch.setenv("STUDIO_DATA_DIR", str(folder))
    return folder


# ---- layouts -------------------------------------------------------------------------------------------------------

def test_class_folders_inside_wrapping_folders_with_junk_ignored(tmp_path):
    root = write_image_folder(tmp_path / "my_dataset" / "images", {"cat": 3, "dog": 3})
    (root / "cat" / ".DS_Store").write_bytes(b"junk")
    (root / "cat" / "._0.png").write_bytes(b"mac resource fork")
    (root / "dog" / "Thumbs.db").write_bytes(b"junk")
    (tmp_path / "my_dataset" / "__MACOSX").mkdir()
    (tmp_path / "my_dataset" / "__MACOSX" / "._images").write_bytes(b"junk")
    (root / "dog" / "notes.txt").write_text("not an image")
    scan = scan_folder(tmp_path / "my_dataset")
    assert scan.root == root and scan.layout == "one folder per class"
    assert sorted({item.label for item in scan.items}) == ["cat", "dog"] and len(scan.items) == 6
    assert scan.skipped == [("dog/notes.txt", "not an image file (.txt)")]


def test_class_names_keep_unicode_spaces_and_quotes(tmp_path):
    names = {'chat "noir"': 2, "Ünïcødé ñame": 2, "it's a dog": 2}
    data = load_source(str(write_image_folder(tmp_path / "set", names)), 8)
    assert sorted(data.class_names) == sorted(names)


def test_train_and_valid_folders_are_the_split(tmp_path):
    write_image_folder(tmp_path / "train", {"a": 4, "b": 4})
    write_image_folder(tmp_path / "val", {"a": 2, "b": 1}, seed=1)
    data = load_source(str(tmp_path), 8)
    assert data.valid_mask is not None and int(data.valid_mask.sum()) == 3
    from core.data.load import Split
    split = Split.from_dataset(data, valid_pct=0.5, seed=0)  # the data's own split wins over valid_pct
    assert len(split.train_labels) == 8 and len(split.valid_labels) == 3


def test_labels_from_file_names_like_oxford_pets(tmp_path):
    for name in ["great_pyrenees_173.jpg", "great_pyrenees_2.jpg", "Abyssinian_1.jpg", "Abyssinian_20.jpg"]:
        Image.new("RGB", (10, 10), (10, 200, 10)).save(tmp_path / name)
    (tmp_path / "README").write_text("hello")
    scan = scan_folder(tmp_path)
    assert scan.layout.startswith("labels from file names")
    assert sorted({item.label for item in scan.items}) == ["Abyssinian", "great_pyrenees"]
    wrapped = tmp_path / "oxford-iiit-pet" / "images"  # the pets download's own layout
    wrapped.mkdir(parents=True)
    for path in tmp_path.glob("*.jpg"):
        (wrapped / path.name).write_bytes(path.read_bytes())
    assert sorted({item.label for item in scan_folder(tmp_path / "oxford-iiit-pet").items}) == \
        ["Abyssinian", "great_pyrenees"]
    custom = scan_folder(tmp_path, label_regex=r"^([a-z])")  # an edited regex: first letter, lower case only
    assert sorted({item.label for item in custom.items}) == ["g"]
    assert ("Abyssinian_1.jpg", "its name does not match the label pattern") in custom.skipped


def test_csv_of_file_and_label_keeps_unicode_spaces_and_quotes(tmp_path):
    (tmp_path / "pics").mkdir()
    for i in range(4):
        (tmp_path / "pics" / f"{i}.png").write_bytes(png_bytes((i * 60, 0, 0)))
    (tmp_path / "labels.csv").write_text('file,label\npics/0.png,chat noir\npics/1.png,chat noir\n'
                                         'pics/2.png,"Ünïcødé ""quoted"""\npics/3.png,"Ünïcødé ""quoted"""\n'
                                         '../outside.png,chat noir\npics/missing.png,x\n', encoding="utf-8")
    report = inspect_source(str(tmp_path))
    assert report.layout == "CSV of file,label"
    assert report.class_counts == {"chat noir": 2, 'Ünïcødé "quoted"': 2}
    reasons = dict(report.skipped)
    assert "outside the dataset folder" in reasons["../outside.png"] and "no such file" in reasons["pics/missing.png"]


# ---- the health report and its command ---------------------------------------------------------------------------

def test_report_lists_bad_files_duplicates_conflicts_and_imbalance(tmp_path, capsys):
    root = write_image_folder(tmp_path / "set", {"big": 9, "small": 2})
    (root / "big" / "empty.png").write_bytes(b"")
    (root / "big" / "fake.jpg").write_text("I am text")
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(noisy, "PNG")
    (root / "big" / "cut.png").write_bytes(noisy.getvalue()[:6000])  # truncated mid-file
    (root / "big" / "copy.png").write_bytes((root / "big" / "0.png").read_bytes())
    (root / "small" / "also_big_0.png").write_bytes((root / "big" / "0.png").read_bytes())
    report = inspect_source(str(root))
    reasons = dict(report.skipped)
    assert reasons["big/empty.png"] == "empty file (0 bytes)"
    assert reasons["big/fake.jpg"] == "not a readable image"
    assert reasons["big/cut.png"].startswith("damaged image")
    assert sorted(report.duplicates[0]) == ["big/0.png", "big/copy.png", "small/also_big_0.png"]
    assert len(report.conflicts) == 1 and report.imbalanced == ["small"]
    assert report.ok and report.class_counts == {"big": 10, "small": 3}
    assert data_main(["inspect", str(root), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ok"] and printed["n_images"] == 13 and len(printed["skipped"]) == 3


def test_training_uses_exactly_the_accepted_images(tmp_path):
    root = write_image_folder(tmp_path / "set", {"a": 5, "b": 5})
    (root / "a" / "broken.png").write_bytes(b"\x89PNG nonsense")
    data = load_source(str(root), 8)
    assert len(data) == 10 and "a/broken.png" not in data.item_names


@pytest.mark.parametrize("build, reason", [
    (lambda root: root.mkdir(), "No readable images"),
    (lambda root: write_image_folder(root, {"only": 4}), "Only one class"),
])
def test_untrainable_folders_exit_2_with_one_sentence(tmp_path, capsys, build, reason):
    build(tmp_path / "set")
    assert data_main(["inspect", str(tmp_path / "set")]) == 2
    assert reason in capsys.readouterr().out


def test_a_file_that_is_not_an_archive_is_refused(tmp_path, data_dir, capsys):
    (tmp_path / "photos.zip").write_text("this is not a zip")
    assert data_main(["inspect", str(tmp_path / "photos.zip")]) == 2
    assert "not a zip archive" in capsys.readouterr().out
    assert not (data_dir / "uploads").exists() or not any((data_dir / "uploads").iterdir())


# ---- archives ------------------------------------------------------------------------------------------------------

def make_zip(path: Path, entries: dict[str, bytes], *, symlink: str | None = None, encrypted: bool = False) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    if encrypted:  # Python cannot write encrypted zips: set the "encrypted" flag bit in every header
        raw = bytearray(path.read_bytes())
        for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            start = raw.find(signature)
            while start != -1:
                raw[start + offset] |= 0x1
                start = raw.find(signature, start + 4)
        path.write_bytes(bytes(raw))
    return path


def test_zip_entries_that_point_outside_are_skipped_and_nothing_escapes(tmp_path, data_dir):
    before = files_under(tmp_path)
    evil = make_zip(tmp_path / "evil.zip", {
        "cats/1.png": png_bytes(), "dogs/1.png": png_bytes((0, 0, 200)),
        "../escaped.png": png_bytes(), "/abs/escaped.png": png_bytes(), "C:/windows/escaped.png": png_bytes(),
        "cats/../../escaped2.png": png_bytes(), "..\\\\win\\\\escaped.png": png_bytes(),
    }, symlink="cats/link.png")
    folder = resolve_folder(str(evil))
    assert folder.is_relative_to(data_dir)
    new = files_under(tmp_path) - before - {"evil.zip"}
    assert all(path.startswith("data") for path in new), new  # nothing outside the data folder
    assert files_under(folder) == {"cats", "dogs", "cats/1.png", "dogs/1.png", UNPACKED_RECORD}
    report = inspect_source(str(evil))
    assert report.class_counts == {"cats": 1, "dogs": 1}


@pytest.mark.parametrize("limits, entries, reason", [
    (ArchiveLimits(max_file_bytes=2 << 20), {"a/big.bin": os.urandom(3 << 20)}, "limit for one file"),
    (ArchiveLimits(max_total_bytes=3 << 20), {f"a/{i}.bin": os.urandom(1 << 20) for i in range(4)},
     "limit for one dataset"),
    (ArchiveLimits(max_entries=3), {f"a/{i}.png": b"x" for i in range(4)}, "the limit is 3"),
    (ArchiveLimits(), {"a/bomb.png": bytes(50 << 20)}, "zip bomb"),  # 50 MB of zeros deflate ~1000x
])
def test_archive_caps_are_enforced_while_extracting(tmp_path, limits, entries, reason):
    archive = make_zip(tmp_path / "big.zip", entries)
    with pytest.raises(DataError, match=reason):
        extract_zip(archive, tmp_path / "out", limits)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.zip"]  # nothing left behind


def test_declared_sizes_that_lie_do_not_get_past_the_cap(tmp_path):
    archive = make_zip(tmp_path / "liar.zip", {"a/x.bin": os.urandom(3 << 20)})
    raw = bytearray(archive.read_bytes())
    # rewrite the uncompressed size in the central directory to claim 1 KB
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 24:central + 28] = struct.pack("<I", 1024)
    archive.write_bytes(bytes(raw))
    with pytest.raises(DataError):
        extract_zip(archive, tmp_path / "out", ArchiveLimits(max_file_bytes=2 << 20))
    assert not (tmp_path / "out").exists()


def test_encrypted_and_damaged_archives_are_refused_with_a_reason(tmp_path):
    with pytest.raises(DataError, match="encrypted"):
        extract_zip(make_zip(tmp_path / "secret.zip", {"a/1.png": png_bytes()}, encrypted=True), tmp_path / "o1")
    good = make_zip(tmp_path / "good.zip", {"a/1.png": os.urandom(4000), "b/1.png": png_bytes()}).read_bytes()
    (tmp_path / "cut.zip").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="not a zip archive"):
        extract_zip(tmp_path / "cut.zip", tmp_path / "o2")
    corrupt = bytearray(good)
    corrupt[100:110] = b"\xff" * 10  # inside the first entry's compressed data
    (tmp_path / "corrupt.zip").write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match="damaged or truncated"):
        extract_zip(tmp_path / "corrupt.zip", tmp_path / "o3")
    assert not any(p.name.startswith("o") for p in tmp_path.iterdir())


def test_a_zip_trains_from_the_command_line(tmp_path, data_dir):
    from core.train.__main__ import main

    source = write_image_folder(tmp_path / "src", {"red": 10, "green": 10, "blue": 10})
    archive = tmp_path / "colours.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in source.rglob("*.png"):
            zf.write(path, Path("colours") / path.relative_to(source))
    runs_dir = tmp_path / "runs"
    assert main(["--data", str(archive), "--arch", "resnet18", "--no-pretrained", "--size", "16", "--bs", "8",
                 "--epochs", "1", "--runs-dir", str(runs_dir), "--name", "zip"]) == 0
    data = json.loads((runs_dir / "zip" / "data.json").read_text())
    assert data["class_names"] == ["blue", "green", "red"] and data["n_train"] + data["n_valid"] == 30


# ---- images --------------------------------------------------------------------------------------------------------

def test_a_decompression_bomb_is_skipped_without_decoding(tmp_path):
    # A valid PNG header that declares 30,000 x 30,000 pixels, followed by almost nothing.
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 10))
                                        + chunk(b"IEND", b""))
    with pytest.raises(ValueError, match="too many pixels"):
        check_image(tmp_path / "bomb.png")


@pytest.mark.parametrize("mode, colour, expected", [
    ("L", 128, (128, 128, 128)), ("LA", (128, 0), (255, 255, 255)), ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
    ("1", 1, (255, 255, 255)), ("CMYK", (0, 255, 255, 0), (255, 0, 0)), ("I;16", 65535, (255, 255, 255)),
])
def test_every_mode_becomes_rgb_the_same_way(mode, colour, expected):
    buffer = io.BytesIO()
    Image.new(mode, (6, 6), colour).save(buffer, format="TIFF" if mode == "CMYK" else "PNG")
    decoded = decode_image(buffer.getvalue(), 4)
    assert decoded.shape == (3, 4, 4) and tuple(decoded[:, 0, 0].tolist()) == expected


def test_palette_transparency_becomes_white():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0] * 256)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0)
    assert (decode_image(buffer.getvalue(), 4) == 255).all()


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "GIF", "TIFF", "JPEG"])
def test_common_formats_are_accepted(fmt):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 0, 250)).save(buffer, format=fmt)
    decoded = decode_image(buffer.getvalue(), 8)
    assert decoded[2].float().mean() > 200 and decoded[0].float().mean() < 40


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (20, 10), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 5))  # top half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the white top becomes the right side
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    decoded = decode_image(buffer.getvalue(), 10).float()
    assert decoded[:, :, -2:].mean() > 200 and decoded[:, :, :2].mean() < 50


def test_resize_methods_squish_crop_and_pad():
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), (255, 255, 255)).save(buffer, format="PNG")
    for method in ("squish", "crop"):
        assert (decode_image(buffer.getvalue(), 10, method) == 255).all()
    padded = decode_image(buffer.getvalue(), 10, "pad")
    assert (padded[:, 0] == 0).all() and (padded[:, 5] == 255).all()  # black bars top and bottom


def test_a_huge_photo_is_decoded_small(tmp_path):
    Image.new("RGB", (6000, 4000), (90, 90, 90)).save(tmp_path / "huge.jpg", quality=80)
    decoded = load_source(str(write_image_folder(tmp_path / "set", {"a": 2, "b": 2})), 8)  # a working set first
    assert len(decoded) == 4
    assert decode_image((tmp_path / "huge.jpg").read_bytes(), 32).shape == (3, 32, 32)


# ---- augmentation --------------------------------------------------------------------------------------------------

def test_augmentation_off_is_the_identity_and_flip_only_mirrors():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    assert not Augment().active and torch.equal(Augment()(images.float()), images.float())
    flipped = Augment(flip=True)(images.float(), torch.Generator().manual_seed(0))
    for original, result in zip(images.float(), flipped):
        assert torch.allclose(result, original, atol=1e-3) or torch.allclose(result, original.flip(-1), atol=1e-3)
    assert not torch.allclose(flipped, images.float())  # some were flipped


def test_augmented_previews_stay_in_range_and_differ():
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    shown = preview(Augment(True, 10, 1.1, 0.2), images, copies=4)
    assert shown.shape == (8, 3, 16, 16) and shown.dtype == torch.uint8
    assert not torch.equal(shown[0], shown[1])


def test_builtin_downloads_say_why_without_a_network(data_dir):
    try:
        load_source("builtin:fashion_mnist", 28)
    except DataError as error:
        assert "downloaded once" in str(error) and "digits" in str(error)
    else:
        pytest.skip("this machine reached the network and downloaded Fashion-MNIST")
