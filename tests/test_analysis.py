"""Interpretation and layer views: exact answers on hand-made inputs, sensible ones on a trained run."""
import numpy as np
import pytest
import torch
from torch import nn

from core.data.batches import normalize
from core.inspect.attribution import METHODS, attribute, top_predictions
from core.inspect.interpret import (
    Predictions,
    confusion_matrix,
    load_predictions,
    most_confused,
    normalize_rows,
    pair_positions,
    per_class_metrics,
    top_losses,
    typical_positions,
)
from core.inspect.visualize import (
    KERNELS,
    activations,
    channel_maxima,
    conv_filters,
    convolve,
    filter_slices,
    first_conv,
    grayscale,
    top_images_for_channel,
)
from core.runs.checkpoint import load_model


def test_most_confused_on_a_known_matrix():
    matrix = np.array([[5, 3, 0],
                       [1, 7, 4],
                       [0, 4, 9]])
    names = ["cat", "dog", "fox"]
    assert most_confused(matrix, names) == [("dog", "fox", 4), ("fox", "dog", 4), ("cat", "dog", 3),
                                            ("dog", "cat", 1)]
    assert most_confused(matrix, names, min_val=4) == [("dog", "fox", 4), ("fox", "dog", 4)]
    assert most_confused(np.eye(3, dtype=int) * 5, names) == []


def test_confusion_matrix_rows_are_actual_and_columns_predicted():
    matrix = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 4)
    assert matrix.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]


def test_colour_filters_are_the_first_layer_weights_scaled_per_filter():
    conv = nn.Conv2d(3, 2, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(24, dtype=torch.float32).view(2, 3, 2, 2))
    tiles = conv_filters(conv)
    assert tiles.shape == (2, 2, 2, 3)
    expected = conv.weight.detach().permute(0, 2, 3, 1).numpy()  # (out, kh, kw, rgb)
    expected = (expected - expected.reshape(2, -1).min(1)[:, None, None, None]) / 11
    assert np.allclose(tiles, expected)
    grey = conv_filters(nn.Conv2d(2, 4, 3))
    assert grey.shape == (8, 3, 3) and grey.min() == 0 and np.allclose(grey.max(axis=(1, 2)), 1)


def test_activations_are_the_layer_output_strongest_channel_first():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Conv2d(5, 4, 1)).eval()
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    maps, channels = activations(model, "2", image, top=3)
    expected = model(normalize(image[None]))[0].detach()
    assert maps.shape == (3, 6, 6)
    assert channels.tolist() == expected.flatten(1).mean(1).argsort(descending=True)[:3].tolist()
    assert np.allclose(maps, expected[channels].numpy(), atol=1e-6)


def test_a_trained_run_reloads_and_its_mistakes_make_sense(trained_run):
    model, class_names, config = load_model(trained_run)
    assert not model.training and class_names == [str(i) for i in range(10)] and config.arch == "resnet18"
    name, conv = first_conv(model)
    assert name == "0.0" and conv.weight.shape == (64, 3, 7, 7)
    predictions = load_predictions(trained_run)
    matrix = confusion_matrix(predictions.targets, predictions.predicted, 10)
    assert matrix.sum() == len(predictions.targets) and np.trace(matrix) / matrix.sum() == predictions.accuracy
    pairs = most_confused(matrix, class_names)
    assert all(actual != predicted for actual, predicted, _ in pairs)
    assert sum(count for *_, count in pairs) == matrix.sum() - np.trace(matrix)


# ---- interpretation helpers on hand-made predictions -------------------------------------------------------------



def hand_made_predictions() -> Predictions:
    # items:        0    1    2    3    4    5
    targets = np.array([0, 0, 1, 1, 1, 2])
    probs = np.array([[0.9, 0.1, 0.0],  # right, sure
                      [0.3, 0.7, 0.0],  # 0 called 1
                      [0.0, 0.6, 0.4],  # right
                      [0.0, 0.8, 0.2],  # right, surer
                      [0.9, 0.1, 0.0],  # 1 called 0
                      [0.2, 0.0, 0.8]])  # right
    losses = -np.log(probs[np.arange(6), targets] + 1e-12)
    return Predictions(targets, probs, losses, np.arange(100, 106))


def test_rows_normalize_to_shares_and_empty_rows_stay_zero():
    assert np.allclose(normalize_rows(np.array([[3, 1], [0, 0]])), [[0.75, 0.25], [0, 0]])


def test_cells_typical_images_and_top_losses_are_the_right_items():
    predictions = hand_made_predictions()
    assert pair_positions(predictions, 0, 1).tolist() == [1]
    assert pair_positions(predictions, 1, 1).tolist() == [3, 2]  # surest first
    assert typical_positions(predictions, 1, k=1).tolist() == [3]
    assert top_losses(predictions, 2).tolist() == [4, 1]  # p(actual)=0.1, then 0.3


def test_per_class_metrics_match_hand_counts_worst_first():
    rows = per_class_metrics(hand_made_predictions(), ["a", "b", "c"])
    by_name = {row.class_name: row for row in rows}
    assert (by_name["a"].precision, by_name["a"].recall, by_name["a"].support) == (0.5, 0.5, 2)
    assert by_name["b"].precision == pytest.approx(2 / 3) and by_name["b"].recall == pytest.approx(2 / 3)
    assert (by_name["c"].precision, by_name["c"].recall, by_name["c"].f1) == (1.0, 1.0, 1.0)
    assert [row.class_name for row in rows] == ["a", "b", "c"]


# ---- attributions on a hand-built network -------------------------------------------------------------------------



def bright_spot_network() -> nn.Sequential:
    """Body: a 1x1 conv summing the channels, then ReLU: positive only on bright pixels (black normalizes below 0).
    Head: average, then class 0 = +feature, class 1 = -feature."""
    conv = nn.Conv2d(3, 1, 1)
    linear = nn.Linear(1, 2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
        linear.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        linear.bias.zero_()
    return nn.Sequential(nn.Sequential(conv, nn.ReLU()),
                         nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)).eval()


def spot_image(size=16) -> torch.Tensor:
    image = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    image[:, :, 2:6, 9:13] = 255  # a bright square, top right
    return image


def test_every_attribution_method_finds_the_bright_square():
    model, image = bright_spot_network(), spot_image()
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[2:6, 9:13] = True
    for method in METHODS:
        heat = attribute(model, image, [0], method)
        assert heat.shape == (1, 16, 16) and heat.min() >= 0 and heat.max() == pytest.approx(1.0), method
        assert inside[np.unravel_index(heat[0].argmax(), (16, 16))], method
        assert heat[0][inside.numpy()].mean() > 5 * heat[0][~inside.numpy()].mean(), method


def test_grad_cam_is_exactly_the_activation_map_for_a_positive_class():
    model, image = bright_spot_network(), spot_image()
    heat = attribute(model, image, [0], "grad_cam")[0]
    features = model[0](normalize(image))[0, 0].detach()
    assert np.allclose(heat, (features / features.max()).numpy(), atol=1e-6)
    assert (heat[:2] == 0).all()  # nothing outside the square's rows


def test_top_predictions_are_sorted_probabilities():
    ranked = top_predictions(bright_spot_network(), spot_image()[0], ["bright", "dark"], k=2)
    assert [name for name, _ in ranked] == ["bright", "dark"] and sum(p for _, p in ranked) == pytest.approx(1)


# ---- filters, channels and convolution basics ------------------------------------------------------------------



def test_filter_slices_show_one_filter_input_by_input():
    conv = nn.Conv2d(4, 2, 3, bias=False)
    slices, labels = filter_slices(conv, out_channel=1)
    assert slices.shape == (4, 3, 3) and labels == ["in 0", "in 1", "in 2", "in 3"]
    weights = conv.weight[1].detach().numpy()
    flat = weights.reshape(4, -1)
    expected = (weights - flat.min(1)[:, None, None]) / np.ptp(flat, 1)[:, None, None]
    assert np.allclose(slices, expected)
    depthwise = nn.Conv2d(5, 5, 3, groups=5)
    assert filter_slices(depthwise, 0)[0].shape == (5, 3, 3)


def test_channel_maxima_are_the_peak_of_each_channel_and_rank_images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    maxima = channel_maxima(model, "1", images, batch_size=2)
    expected = model[1](model[0](normalize(images))).amax(dim=(2, 3)).detach().numpy()
    assert maxima.shape == (5, 4) and np.allclose(maxima, expected)
    order, strength = top_images_for_channel(maxima, 2, k=3)
    assert order.tolist() == np.argsort(-expected[:, 2])[:3].tolist() and np.allclose(strength, expected[order, 2])


def test_sobel_finds_a_vertical_edge_and_grayscale_uses_luma_weights():
    gray = np.zeros((5, 5))
    gray[:, 3:] = 10.0  # dark left, bright right
    out = convolve(gray, KERNELS["Vertical edges (Sobel x)"])
    assert out[2].tolist() == [0.0, 0.0, 40.0, 40.0, -40.0]  # the edge, and zero padding at the right border
    image = torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2)
    assert np.allclose(grayscale(image), 0.299 * 255)


def test_the_pretrained_network_alone_recognises_a_real_photo():
    from sklearn.datasets import load_sample_image

    from core.data.images import resize_uint8
    from core.net.backbones import imagenet_classifier

    model, categories = imagenet_classifier("efficientnet_lite0", 224)
    photo = torch.from_numpy(load_sample_image("china.jpg").copy()).permute(2, 0, 1)[None]  # a Chinese temple
    ranked = top_predictions(model, resize_uint8(photo, 224)[0], categories, k=3)
    assert len(categories) == 1000 and ranked[0][0] == "bell cote"
    assert {name for name, _ in ranked} <= {"bell cote", "dome", "palace", "church", "monastery", "stupa"}


def test_uploaded_bytes_decode_or_fail_with_a_sentence(monkeypatch):
    import io

    from PIL import Image

    from core.data.images import decode_image
    from core.errors import DataError

    buffer = io.BytesIO()
    Image.new("RGBA", (40, 20), (255, 0, 0, 0)).save(buffer, format="PNG")  # fully transparent red
    decoded = decode_image(buffer.getvalue(), 16)
    assert decoded.shape == (3, 16, 16) and decoded.dtype == torch.uint8
    assert (decoded == 255).all()  # transparency becomes white, the same for every mode
    with pytest.raises(DataError, match="not an image"):
        decode_image(b"certainly not a picture", 16)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # make a 40x20 image count as a decompression bomb
    with pytest.raises(DataError, match="too many pixels"):
        decode_image(buffer.getvalue(), 16)


def test_the_html_report_stands_alone(trained_run):
    from core.data.load import load_source
    from pages._report import run_report_html

    model, class_names, config = load_model(trained_run)
    images = load_source(config.data, config.size).images
    html = run_report_html(trained_run, model, images, load_predictions(trained_run), class_names)
    for heading in ["Settings", "Training", "Confusion matrix", "Most confused", "Per-class metrics", "Top losses"]:
        assert f"<h2>{heading}" in html
    assert "python -m core.train --data builtin:digits" in html
    assert "<script src=" not in html and html.count("Plotly.newPlot") == 4  # plotly.js inlined, four charts


def test_feature_layers_list_convolutions_and_blocks_in_forward_order():
    from core.net.backbones import build_classifier, feature_layers

    names = [name for name, _ in feature_layers(build_classifier("resnet18", 2, pretrained=False, size=32).model)]
    assert names[:4] == ["0.0", "0.4.0.conv1", "0.4.0.conv2", "0.4.0"]  # a block's output after its convolutions
    assert names.index("0.5.0") == names.index("0.5.0.downsample.0") + 1
    assert "0.7.1" in names and len(names) == 20 + 8  # 20 convolutions (3 downsample) and 8 residual blocks

