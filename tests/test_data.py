import numpy as np
import pytest
import torch

from core.data.batches import denormalize, iterate_batches, normalize
from core.data.images import resize_uint8
from core.data.load import load_source, stratified_split
from core.errors import DataError


def test_digits_are_real_and_complete():
    data = load_source("builtin:digits", 16)
    assert data.images.shape == (1797, 3, 16, 16) and data.images.dtype == torch.uint8
    assert data.class_names == tuple(str(i) for i in range(10))
    assert sum(data.class_counts().values()) == 1797
    # grey digits: the three channels are equal, and strokes reach full brightness
    assert torch.equal(data.images[:, 0], data.images[:, 1]) and data.images.max() == 255
    assert data.fingerprint() == load_source("builtin:digits", 16).fingerprint()


def test_unknown_builtin_and_missing_folder_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="digits"):
        load_source("builtin:nope", 32)
    with pytest.raises(DataError, match="does not exist"):
        load_source(str(tmp_path / "missing"), 32)


def test_image_folder_layout(image_folder):
    (image_folder / "red" / "notes.txt").write_text("not an image")
    (image_folder / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    data = load_source(str(image_folder), 8)
    assert data.class_names == ("blue", "green", "red")
    assert data.class_counts() == {"blue": 6, "green": 6, "red": 6}
    assert data.images.shape == (18, 3, 8, 8)


def test_stratified_split_is_seeded_disjoint_and_covers_every_class():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 2)
    train, valid = stratified_split(labels, 0.2, seed=3)
    assert set(train).isdisjoint(valid) and len(train) + len(valid) == len(labels)
    assert sorted(np.bincount(labels[valid].numpy())) == [1, 1, 2]
    assert set(labels[train].tolist()) == {0, 1, 2}
    again = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(valid, again[1])


def test_normalize_uses_imagenet_statistics_and_inverts():
    images = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    normalized = normalize(images)
    assert normalized[0, 0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229)
    assert torch.allclose(denormalize(normalized), torch.ones(1, 3, 2, 2))


def test_resize_keeps_constant_images_constant():
    images = torch.full((2, 3, 8, 8), 77, dtype=torch.uint8)
    assert torch.equal(resize_uint8(images, 20), torch.full((2, 3, 20, 20), 77, dtype=torch.uint8))


def test_batches_cover_every_item_once_and_drop_last_drops_the_remainder():
    images, labels = torch.zeros(10, 3, 4, 4, dtype=torch.uint8), torch.arange(10)
    seen = torch.cat([y for _, y in iterate_batches(images, labels, 4, shuffle=True,
                                                     generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(10))
    sizes = [len(y) for _, y in iterate_batches(images, labels, 4, shuffle=False, drop_last=True)]
    assert sizes == [4, 4]


def test_batches_gathered_ahead_on_a_thread_are_the_rows_asked_for_in_order():
    """The streamed GPU path's gathering (pinned there), checked on the CPU: same rows, same order, and a
    consumer that stops early (a stop request) leaves no thread behind."""
    import threading

    from core.data.batches import gathered_ahead

    images = torch.randint(0, 256, (50, 3, 5, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(50) % 7
    order = torch.randperm(50, generator=torch.Generator().manual_seed(2))
    indices = [order[start:start + 8] for start in range(0, 50, 8)]
    batches = list(gathered_ahead(images, labels, indices, pin=False))
    assert len(batches) == 7 and len(batches[-1][1]) == 2
    for (x, y), index in zip(batches, indices):
        assert torch.equal(x, images[index]) and torch.equal(y, labels[index])
    stream = gathered_ahead(images, labels, indices, pin=False)
    next(stream)
    stream.close()
    assert not any(t.name.startswith("batches-ahead") for t in threading.enumerate())
