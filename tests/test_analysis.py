"""Interpretation and layer views: exact answers on hand-made inputs, sensible ones on a trained run."""
import numpy as np
import torch
from torch import nn

from core.interpret import confusion_matrix, load_predictions, most_confused
from core.visualize import activations, conv_filters, first_conv, load_model


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
    from core.data import normalize
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
