"""The import path on odd input (issue 12): every case ends as a listed skip with its reason or a one-sentence
refusal, on the Data page's path (core.data.archive.unpack, core.data.inspect_source) and in `python -m core.data
inspect`; nothing raises past them, hangs, or reads a whole huge file."""
import errno
import io
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
import tracemalloc
import unicodedata
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from core.data.__main__ import main as data_main
from core.data.archive import UNPACKED_RECORD, archive_name, data_root, unpack
from core.data.health import check_image
from core.data.images import MAX_PIXELS
from core.data.layouts import MAX_DEPTH, scan_folder
from core.data.load import inspect_source, resolve_folder
from core.errors import DataError
from tests.conftest import write_image_folder

ROOT = Path(__file__).resolve().parent.parent
CAFE_NFC, CAFE_NFD = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")


def png_bytes(colour=(200, 30, 30), size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


PNGS = [png_bytes((k * 40, 255 - k * 40, 90)) for k in range(6)]


def zip_bytes(entries: list[tuple[str, bytes]], symlinks: tuple[str, ...] = ()) -> bytes:
    """A zip of (name, data) in this order; a name may come twice (zipfile warns, and writes it)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore")  # "Duplicate name": the very thing some tests build
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def two_classes(extra: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """A trainable zip's entries (cat/ and dog/, two images each) plus the odd ones."""
    return [("cat/0.png", PNGS[0]), ("cat/1.png", PNGS[1]), ("dog/0.png", PNGS[2]), ("dog/1.png", PNGS[3]), *extra]


def listing(folder: Path) -> set[str]:
    return {os.path.relpath(os.path.join(top, name), folder)
            for top, dirs, files in os.walk(folder) for name in dirs + files}


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "data"
    monkeypatch.setenv("STUDIO_DATA_DIR", str(folder))
    return folder


def both_paths_skip(tmp_path, capsys, entries, entry: str, reason: str, counts=None) -> None:
    """The entry is skipped with the reason on the Data page's path (unpack of the upload's bytes) and in the
    command line's (inspect of the .zip file), and the rest of the dataset is read."""
    data = zip_bytes(entries)
    extraction = unpack(data, "upload")
    assert (entry, reason) in extraction.skipped
    assert inspect_source(str(extraction.folder)).class_counts == (counts or {"cat": 2, "dog": 2})
    path = tmp_path / "upload.zip"
    path.write_bytes(data)
    assert data_main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"skipped {entry}: {reason}" in out and "Traceback" not in out
    uploads = data_root() / "uploads"
    assert not [p for p in uploads.iterdir() if p.name.startswith(".")]  # no temporary left


# ---- 1, 2, 3, 10: names the file system cannot hold as written ------------------------------------------------

@pytest.mark.parametrize("entries, entry, reason, n_cats", [
    ([("cat/x", b"a file"), ("cat/x/2.png", PNGS[4])], "cat/x/2.png",
     "one of its folders has the name of a file that came earlier in the archive", 2),  # cat/x: not an image
    ([("cat/x/2.png", PNGS[4]), ("cat/x", b"a file")], "cat/x",
     "a folder of the same name came earlier in the archive", 3),
], ids=["file-then-folder", "folder-then-file"])
def test_a_zip_name_that_is_both_a_file_and_a_folder_keeps_the_first_and_skips_the_other(
        tmp_path, data_dir, capsys, entries, entry, reason, n_cats):
    both_paths_skip(tmp_path, capsys, two_classes([]) + entries, entry, reason, {"cat": n_cats, "dog": 2})


def test_an_entry_name_longer_than_the_file_system_allows_is_skipped(tmp_path, data_dir, capsys):
    name = "cat/" + "n" * 300 + ".png"  # one component of 304 bytes; Linux and macOS allow 255
    both_paths_skip(tmp_path, capsys, two_classes([(name, PNGS[4])]), name,
                    "its name is longer than the file system allows")


def test_an_entry_nested_a_thousand_folders_deep_is_skipped_at_extraction(tmp_path, data_dir, capsys):
    name = "cat/" + "d/" * 1000 + "deep.png"
    both_paths_skip(tmp_path, capsys, two_classes([(name, PNGS[4])]), name,
                    f"nested more than {MAX_DEPTH} folders deep")


def test_an_entry_whose_path_is_longer_than_path_max_is_skipped(tmp_path, data_dir, capsys):
    name = "cat/" + ("p" * 200 + "/") * 25 + "long.png"  # 25 folders (under the depth cap), 5,000+ bytes
    both_paths_skip(tmp_path, capsys, two_classes([(name, PNGS[4])]), name,
                    "its name is longer than the file system allows")


def test_a_name_that_appears_twice_in_a_zip_keeps_the_first_copy(tmp_path, data_dir, capsys):
    entries = two_classes([("cat/0.png", PNGS[5])])  # a second cat/0.png, other bytes
    both_paths_skip(tmp_path, capsys, entries, "cat/0.png", "it appears twice in the archive; the first copy was kept")
    folder = unpack(zip_bytes(entries), "upload").folder
    assert (folder / "cat" / "0.png").read_bytes() == PNGS[0]


def make_chain(parent: Path, name: str, depth: int, leaf: bytes) -> None:
    """`parent/name/name/.../leaf.png`, `depth` folders, made through directory descriptors, so neither the
    recursion limit nor PATH_MAX stops the test from building what a tar or rsync can leave on disk."""
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir(name, dir_fd=fd)
        inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = inner
    out = os.open("leaf.png", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
    os.write(out, leaf)
    os.close(out)
    os.close(fd)


def remove_chain(parent: Path, name: str) -> None:
    """Undo make_chain one level at a time from the top (shutil.rmtree recurses once per level)."""
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while True:
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            children = os.listdir(inner)
            for child in children:
                if child != name:
                    os.unlink(child, dir_fd=inner)
            os.close(inner)
            if name not in children:
                os.rmdir(name, dir_fd=fd)
                return
            os.rename(f"{name}/{name}", ".pulled-up", src_dir_fd=fd, dst_dir_fd=fd)
            os.rmdir(name, dir_fd=fd)
            os.rename(".pulled-up", name, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("name, depth, reason", [
    ("d", 1000, f"nested more than {MAX_DEPTH} folders deep, so not read"),
    ("p" * 200, 30, "its path is longer than the file system allows"),  # 6,000 bytes: past PATH_MAX at level 20
], ids=["a-thousand-deep", "past-path-max"])
def test_a_folder_tree_too_deep_or_too_long_on_disk_is_listed_as_skipped(tmp_path, capsys, name, depth, reason):
    root = write_image_folder(tmp_path / "set", {"cat": 2, "dog": 2})
    make_chain(root / "dog", name, depth, PNGS[4])
    try:
        report = inspect_source(str(root))
        assert report.class_counts == {"cat": 2, "dog": 2}
        assert [r for _, r in report.skipped] == [reason]
        assert data_main(["inspect", str(root)]) == 0 and reason in capsys.readouterr().out
    finally:
        remove_chain(root / "dog", name)


# ---- 4, 7: labels from a CSV that is not UTF-8, and from a broken pattern --------------------------------------

def test_a_labels_csv_that_is_not_utf8_is_refused_in_one_sentence(tmp_path, data_dir, capsys):
    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(PNGS[i])
    (tmp_path / "labels.csv").write_bytes("file,label\n0.png,café\n1.png,café\n2.png,thé\n3.png,thé\n"
                                          .encode("cp1252"))  # what Excel's plain "CSV" writes on Windows
    with pytest.raises(DataError) as refused:
        inspect_source(str(tmp_path))
    message = str(refused.value)
    assert "labels.csv is not UTF-8" in message and "CSV UTF-8" in message and message.endswith(".")
    assert data_main(["inspect", str(tmp_path)]) == 2
    assert capsys.readouterr().out.strip() == message
    (tmp_path / "labels.csv").write_text("file,label\n0.png,café\n1.png,café\n2.png,thé\n3.png,thé\n",
                                         encoding="utf-8-sig")  # saved again as "CSV UTF-8": with its BOM
    assert inspect_source(str(tmp_path)).class_counts == {"café": 2, "thé": 2}


@pytest.mark.parametrize("pattern, words", [
    (r"^(.+_\d+", "The label pattern is not a valid regular expression: missing ), unterminated subpattern"),
    (r"^[a-z]+_\d+", "The label pattern has no group"),
])
def test_a_label_pattern_that_is_not_a_usable_regular_expression_is_refused_in_one_sentence(
        tmp_path, capsys, pattern, words):
    for i, name in enumerate(["ab_1.png", "ab_2.png", "cd_1.png", "cd_2.png"]):
        (tmp_path / name).write_bytes(PNGS[i])
    with pytest.raises(DataError, match=words.replace("(", r"\(").replace(")", r"\)")) as refused:
        inspect_source(str(tmp_path), pattern)
    assert str(refused.value).endswith(".") and "\n" not in str(refused.value)
    assert data_main(["inspect", str(tmp_path), "--label-regex", pattern]) == 2
    assert capsys.readouterr().out.strip() == str(refused.value)


# ---- 5, 6: what is not a regular file, or cannot be read ---------------------------------------------------------

@contextmanager
def no_longer_than(seconds: int):
    """Fail the test instead of hanging it: SIGALRM interrupts even a blocked open() of a FIFO."""
    def stop(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_fifo_named_like_an_image_is_skipped_without_hanging(tmp_path, data_dir, capsys):
    root = write_image_folder(tmp_path / "set", {"cat": 2, "dog": 2})
    os.mkfifo(root / "cat" / "x.png")
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(root / "dog" / "s.png"))
        os.mkfifo(tmp_path / "fifo.zip")
        with no_longer_than(20):
            report = inspect_source(str(root))
            assert report.class_counts == {"cat": 2, "dog": 2}
            assert dict(report.skipped) == {"cat/x.png": "not a regular file (a named pipe)",
                                            "dog/s.png": "not a regular file (a socket)"}
            assert data_main(["inspect", str(tmp_path / "fifo.zip")]) == 2  # the command line's zip, a FIFO
            assert "is not a file" in capsys.readouterr().out
            (root / "labels.csv").write_text("file,label\ncat/0.png,cat\ncat/1.png,cat\ncat/x.png,cat\n"
                                             "dog/0.png,dog\ndog/1.png,dog\n")
            by_csv = inspect_source(str(root))  # a CSV row naming the FIFO
            assert by_csv.class_counts == {"cat": 2, "dog": 2}
            assert ("cat/x.png", "row 4: not a regular file (a named pipe)") in by_csv.skipped


def unreadable_folder_and_file(tmp_path) -> Path:
    root = write_image_folder(tmp_path / "set", {"cat": 3, "dog": 3})
    write_image_folder(root / "dog", {"locked": 2})
    return root


def assert_unreadable_ones_skipped(root: Path) -> None:
    report = inspect_source(str(root))
    reasons = dict(report.skipped)
    assert reasons == {"cat/2.png": "cannot be read (permission denied)",
                       "dog/locked": "cannot be read (permission denied)"}
    assert report.ok and report.class_counts == {"cat": 2, "dog": 3}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_file_or_folder_is_skipped_with_its_reason(tmp_path):
    root = unreadable_folder_and_file(tmp_path)
    (root / "cat" / "2.png").chmod(0)
    (root / "dog" / "locked").chmod(0)
    try:
        assert_unreadable_ones_skipped(root)
    finally:
        (root / "dog" / "locked").chmod(0o755)


def test_an_unreadable_file_or_folder_is_skipped_even_when_tests_run_as_root(tmp_path, monkeypatch):
    # The same refusals the kernel gives a user without permission, given by the calls the scan makes.
    root = unreadable_folder_and_file(tmp_path)
    denied = {str(root / "cat" / "2.png"), str(root / "dog" / "locked")}
    real_open, real_scandir = os.open, os.scandir

    def refuse(real):
        def call(path, *args, **kwargs):
            if str(path) in denied:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path, *args, **kwargs)
        return call
    monkeypatch.setattr(os, "open", refuse(real_open))
    monkeypatch.setattr(os, "scandir", refuse(real_scandir))
    assert_unreadable_ones_skipped(root)


def test_a_file_name_that_is_not_utf8_is_shown_with_its_bytes_escaped(tmp_path, capsys):
    root = write_image_folder(tmp_path / "set", {"cat": 2, "dog": 2})
    with open(os.fsencode(root / "cat") + b"/caf\xe9.txt", "wb") as f:  # an old zip tool's latin-1 name
        f.write(b"notes")
    assert data_main(["inspect", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == [
        {"file": "cat/caf\\udce9.txt", "reason": "not an image file (.txt)"}]


# ---- 8: memory: size and header first ---------------------------------------------------------------------------

def test_a_sparse_three_gigabyte_tif_is_judged_by_its_size_without_reading_it(tmp_path):
    root = write_image_folder(tmp_path / "set", {"cat": 2, "dog": 2})
    huge = root / "cat" / "huge.tif"
    Image.new("L", (4, 4)).save(huge, format="TIFF")
    with open(huge, "r+b") as f:
        f.truncate(3 << 30)  # a hole: no disk, no memory, but 3 GB to anything that reads it
    tracemalloc.start()
    try:
        report = inspect_source(str(root))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert dict(report.skipped) == {"cat/huge.tif": "larger than 256 MB, the limit for one image file"}
    assert report.class_counts == {"cat": 2, "dog": 2} and peak < 20 << 20


def test_decode_image_refuses_a_small_png_that_declares_too_many_pixels_without_allocating(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (13000, 12000)).save(bomb, format="PNG")  # 156 megapixels, all black: about 20 KB
    assert 13000 * 12000 > MAX_PIXELS and bomb.stat().st_size < 1 << 20
    # A fresh process, so its peak resident memory measures this decode alone (Pillow's buffers are not
    # Python objects: tracemalloc cannot see them).
    script = textwrap.dedent(f"""
        import resource, sys
        from pathlib import Path
        from core.errors import DataError
        from core.data.images import decode_image, open_rgb
        data = Path({str(bomb)!r}).read_bytes()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for attempt in (lambda: decode_image(data, 64), lambda: open_rgb({str(bomb)!r}, 64)):
            try:
                attempt()
                sys.exit("decoded")
            except DataError as error:
                message = str(error)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # kilobytes on Linux
        print(grown, message)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          check=False)
    assert done.returncode == 0, done.stderr
    grown_kb, message = done.stdout.split(" ", 1)
    assert int(grown_kb) < 200 << 10  # decoding it would take 470 MB (as RGB) before any resize
    assert message.strip() == ("That image is 13,000×12,000 pixels, more than the 40 megapixels this app opens; "
                               "use a smaller copy.")
    with pytest.raises(ValueError, match="too many pixels"):
        check_image(bomb)


# ---- 9: two processes unpacking the same zip at once ------------------------------------------------------------

UNPACKER = """
import json, os, sys, time
from pathlib import Path
from core.data.archive import unpack
zips = sys.argv[1:]
print("ready", flush=True)
while not os.path.exists(os.environ["GO_FILE"]):
    time.sleep(0.001)
for path in zips:
    extraction = unpack(Path(path), Path(path).stem)
    print(json.dumps([str(extraction.folder), extraction.n_files, extraction.skipped]), flush=True)
"""


def test_two_processes_unpacking_the_same_zips_at_once_both_get_the_same_complete_folder(tmp_path, data_dir):
    rounds = 12
    zips = []
    for r in range(rounds):  # a hundred entries each, so the two unpackings overlap, and one skip to record
        entries = [(f"c{k % 2}/{r}-{k}.png", PNGS[k % 6] + bytes([r, k])) for k in range(100)]
        path = tmp_path / f"set{r}.zip"
        path.write_bytes(zip_bytes([*entries, ("../escape.png", PNGS[0])]))
        zips.append(str(path))
    env = {**os.environ, "STUDIO_DATA_DIR": str(data_dir), "GO_FILE": str(tmp_path / "go")}
    workers = [subprocess.Popen([sys.executable, "-c", UNPACKER, *zips], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT) for _ in range(2)]
    for worker in workers:
        assert worker.stdout.readline().strip() == "ready"
    (tmp_path / "go").touch()
    outputs = [worker.communicate(timeout=120) for worker in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
    first, second = ([json.loads(line) for line in out.splitlines()] for out, _ in outputs)
    assert first == second and len(first) == rounds
    for folder, n_files, skipped in first:
        assert n_files == 100 and skipped == [["../escape.png", "its path points outside the dataset folder"]]
        assert len(list(Path(folder).rglob("*.png"))) == 100
    uploads = data_dir / "uploads"
    assert sorted(p.name for p in uploads.iterdir()) == sorted(archive_name(Path(z).stem, path=Path(z)) for z in zips)


def test_a_temporary_folder_left_by_a_killed_process_is_never_taken_for_the_dataset(tmp_path, data_dir):
    data = zip_bytes(two_classes([("../escape.png", PNGS[0])]))
    uploads = data_dir / "uploads"
    name = archive_name("upload", data=data)
    stale, fresh = uploads / f".{name}.abc.partial", uploads / f".{name}.def.partial"
    for leftover in (stale, fresh):
        (leftover / "cat").mkdir(parents=True)
        (leftover / "cat" / "0.png").write_bytes(PNGS[0])  # half a dataset
    hours_ago = time.time() - 7200
    os.utime(stale, (hours_ago, hours_ago))
    extraction = unpack(data, "upload")
    assert extraction.folder == uploads / name and extraction.n_files == 4
    assert sorted(p.name for p in uploads.iterdir()) == sorted([name, fresh.name])  # fresh may still be in use
    assert listing(extraction.folder) == {"cat", "dog", "cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png",
                                          UNPACKED_RECORD}
    again = unpack(data, "upload")  # reused, and still says what was skipped
    assert again.folder == extraction.folder and again.skipped == extraction.skipped and again.n_files == 4
    assert resolve_folder(str(uploads)) == uploads and scan_folder(uploads).items[0].label == "cat"  # one dataset


# ---- 11: one class however its name is normalised ------------------------------------------------------------

def test_a_class_written_in_nfc_and_nfd_is_one_class_from_folders_csv_and_file_names(tmp_path):
    folders = tmp_path / "folders"
    write_image_folder(folders, {CAFE_NFC: 2, CAFE_NFD: 2, "thé": 2})  # two folders on Linux, as a zip brings them
    assert inspect_source(str(folders)).class_counts == {CAFE_NFC: 4, "thé": 2}
    by_csv = tmp_path / "csv"
    by_csv.mkdir()
    for i in range(4):
        (by_csv / f"{i}.png").write_bytes(PNGS[i])
    (by_csv / "labels.csv").write_text(f"file,label\n0.png,{CAFE_NFC}\n1.png,{CAFE_NFD}\n2.png,thé\n3.png,thé\n",
                                       encoding="utf-8")
    assert inspect_source(str(by_csv)).class_counts == {CAFE_NFC: 2, "thé": 2}
    names = tmp_path / "names"
    names.mkdir()
    for i, label in enumerate([CAFE_NFC, CAFE_NFD, "thé", "thé"]):
        (names / f"{label}_{i}.png").write_bytes(PNGS[i])
    assert inspect_source(str(names)).class_counts == {CAFE_NFC: 2, "thé": 2}


# ---- 12: whatever the archive or folder, a report or one sentence, and nothing written outside ------------------

PLAIN = st.sampled_from(["cat", "dog", CAFE_NFC, CAFE_NFD, "a b", "train", "valid", "x"])
FILE_NAMES = st.sampled_from(["0.png", "1.png", "2.jpg", "great_pyrenees_3.png", "notes.txt", ".DS_Store",
                              "labels.csv", "x", "n" * 300 + ".png"])
STRANGE = st.sampled_from(["..", "/abs", "C:", "\\\\server", "a\\b", ".", "", "__MACOSX", "p" * 200])


@st.composite
def entry_names(draw, earlier: list[str]):
    kind = draw(st.sampled_from(["plain", "plain", "strange", "deep", "again", "below", "above"]))
    if kind == "again" and earlier:
        return draw(st.sampled_from(earlier))  # a duplicate
    if kind == "below" and earlier:
        return draw(st.sampled_from(earlier)) + "/" + draw(FILE_NAMES)  # a file used as a folder
    if kind == "above" and earlier:
        name = draw(st.sampled_from(earlier))
        return name.rsplit("/", 1)[0] if "/" in name else name  # a folder used as a file
    folders = draw(st.lists(STRANGE if kind == "strange" else PLAIN, min_size=0, max_size=3))
    if kind == "deep":
        folders += ["d"] * draw(st.sampled_from([MAX_DEPTH - 2, MAX_DEPTH + 5, 300]))
    return "/".join([*folders, draw(FILE_NAMES)])


CONTENTS = st.sampled_from(["png", "png", "empty", "random", "csv-cp1252", "csv-utf8"])


def content(kind: str, rng: bytes) -> bytes:
    return {"png": PNGS[rng[0] % 6], "empty": b"", "random": rng * 8,
            "csv-cp1252": "file,label\ncat/0.png,café\ndog/0.png,thé\n".encode("cp1252"),
            "csv-utf8": b"file,label\ncat/0.png,cat\ndog/1.png,dog\n../0.png,x\n"}[kind]


@st.composite
def archives(draw):
    entries = two_classes([]) if draw(st.booleans()) else []  # half of them trainable but for the odd entries
    names: list[str] = [name for name, _ in entries]
    symlinks = []
    for _ in range(draw(st.integers(1, 12))):
        name = draw(entry_names(names))
        names.append(name)
        entries.append((name, content(draw(CONTENTS), draw(st.binary(min_size=1, max_size=16)))))
        if draw(st.integers(0, 9)) == 0:
            symlinks.append(name)
    return zip_bytes(entries, tuple(symlinks))


def assert_a_sentence(error: DataError) -> None:
    message = str(error)
    assert isinstance(message, str) and message.endswith(".") and "Traceback" not in message


@contextmanager
def own_data_folder(base: Path):
    """A fresh STUDIO_DATA_DIR for one example (monkeypatch lives as long as the whole test, not one example)."""
    before = os.environ.get("STUDIO_DATA_DIR")
    os.environ["STUDIO_DATA_DIR"] = str(base / "data")
    try:
        yield base / "data"
    finally:
        if before is None:
            del os.environ["STUDIO_DATA_DIR"]
        else:
            os.environ["STUDIO_DATA_DIR"] = before


@contextmanager
def removed_after(base: Path):
    """Each example's files go when it ends: sixty examples' leftovers would only fill the disk."""
    try:
        yield
    finally:
        shutil.rmtree(base, ignore_errors=True)


FAST = settings(database=None, suppress_health_check=[HealthCheck.too_slow])  # examples: the profile's (conftest.py)


@FAST
@given(data=archives(), pattern=st.sampled_from([None, None, r"^(.+)_\d+\.\w+$", r"^(.+", r"\w+"]))
@example(data=zip_bytes(two_classes([("", b"an entry with no name")])), pattern=None)  # found by this test
def test_any_archive_unpacks_to_a_report_or_one_sentence_and_writes_nothing_outside(tmp_path_factory, data, pattern):
    base = tmp_path_factory.mktemp("zip")
    (base / "upload.zip").write_bytes(data)
    before = listing(base)
    with own_data_folder(base) as data_folder, removed_after(base):
        uploads = data_folder / "uploads"
        try:
            extraction = unpack(data, "upload")
        except DataError as error:
            assert_a_sentence(error)
            assert not uploads.exists() or not any(uploads.iterdir())  # nothing left behind by a refusal
            return
        assert extraction.folder.parent == uploads and all(isinstance(r, str) for _, r in extraction.skipped)
        for top, dirs, files in os.walk(extraction.folder):
            assert not any(os.path.islink(os.path.join(top, name)) for name in dirs + files)
        try:
            report = inspect_source(str(base / "upload.zip"), pattern)  # the command line's path: the same folder
            assert extraction.skipped == report.skipped[:len(extraction.skipped)]
        except DataError as error:
            assert_a_sentence(error)
        assert data_main(["inspect", str(base / "upload.zip"), *(["--label-regex", pattern] if pattern else [])]) \
            in (0, 2)
        new = listing(base) - before
        assert all(p == "data" or p.startswith(("data/uploads", "data/edits")) for p in new), new
        assert [p.name for p in uploads.iterdir()] == [extraction.folder.name]  # no temporary folder left


@st.composite
def trees(draw):
    """Folder trees on disk: images, junk, empty folders, FIFOs, links that point outside, deep nesting."""
    paths = [(f"{label}/{i}.png", "png", bytes([i])) for label in ("cat", "dog") for i in range(2)] \
        if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 10))):
        folders = draw(st.lists(PLAIN, max_size=3))
        if draw(st.integers(0, 5)) == 0:
            folders += ["d"] * draw(st.sampled_from([MAX_DEPTH - 1, MAX_DEPTH + 3]))
        kind = draw(st.sampled_from(["png", "png", "random", "empty", "fifo", "link-out", "link-dir", "folder",
                                     "csv-cp1252", "csv-utf8"]))
        paths.append(("/".join([*folders, draw(FILE_NAMES)]), kind, draw(st.binary(min_size=1, max_size=16))))
    return paths


def build_tree(base: Path, paths) -> Path:
    root, outside = base / "tree", base / "outside.png"
    root.mkdir()
    outside.write_bytes(PNGS[0])
    for relative, kind, rng in paths:
        path = root / relative
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(path) or not path.parent.resolve().is_relative_to(root.resolve()):
                continue  # a name taken already (writing to a FIFO made here would block), or a path through a link
            if kind == "fifo":
                os.mkfifo(path)
            elif kind == "link-out":
                path.symlink_to(outside)
            elif kind == "link-dir":
                path.symlink_to(base, target_is_directory=True)
            elif kind == "folder":
                path.mkdir()
            else:
                path.write_bytes(content(kind, rng))
        except OSError:  # a name taken already, or too long: this tree simply lacks it
            continue
    return root


@FAST
@given(paths=trees(), pattern=st.sampled_from([None, None, r"^(.+)_\d+\.\w+$", r"[", r"x"]))
def test_any_folder_on_disk_gives_a_report_or_one_sentence_without_hanging(tmp_path_factory, paths, pattern):
    base = tmp_path_factory.mktemp("tree")
    with removed_after(base):
        root = build_tree(base, paths)
        before = listing(base)
        with own_data_folder(base), no_longer_than(30):
            try:
                report = inspect_source(str(root), pattern)
                assert all(isinstance(f, str) and isinstance(r, str) for f, r in report.skipped)
            except DataError as error:
                assert_a_sentence(error)
            assert data_main(["inspect", str(root), *(["--label-regex", pattern] if pattern else [])]) in (0, 2)
        assert {p for p in listing(base) - before if not p.startswith("data")} == set()  # read, never written


def test_a_relabel_to_a_decomposed_name_joins_the_composed_class():
    import unicodedata

    from core.data.edits import check_label

    composed, decomposed = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert composed != decomposed and check_label(decomposed) == composed


def test_an_image_path_that_became_a_fifo_is_refused_without_blocking(tmp_path):
    from core.data.images import open_rgb

    fifo = tmp_path / "swapped.png"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="is not a regular file"):
        open_rgb(fifo, 32)
