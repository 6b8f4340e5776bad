"""Grad-CAM reads a layer whose map is fine enough for the image size, and says so when none is."""
import numpy as np
import pytest
import torch
from captum.attr import LayerGradCam
from torch import nn

from core.data.batches import normalize
from core.inspect.attribution import AttributionUnavailable, attribute, grad_cam_layer, grad_cam_note
from core.net.backbones import build_classifier


def strided_network() -> nn.Sequential:
    """Body: three 3x3 convolutions of stride 2 (maps of S/2, S/4, S/8 cells), no blocks; head: pool and classify."""
    torch.manual_seed(0)
    body = nn.Sequential(*(nn.Sequential(nn.Conv2d(c, 4, 3, stride=2, padding=1), nn.ReLU()) for c in (3, 4, 4)))
    return nn.Sequential(body, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))).eval()


@pytest.mark.parametrize("size, name, side", [
    (64, "0", 8),  # the body's own output: 8x8 is enough, and nothing is deeper
    (32, "0.1.0", 8),  # the body ends at 4x4; its second convolution keeps 8x8
    (16, None, None),  # only the first convolution keeps 8x8, and it lies before the second downsampling
])
def test_the_deepest_convolution_with_six_cells_a_side_past_the_first_stage_is_read(size, name, side):
    layer = grad_cam_layer(strided_network(), size)
    assert (layer and layer.name, layer and layer.side) == (name, side)


@pytest.mark.parametrize("arch, size, name, side", [
    ("resnet18", 224, "0", 7),  # layer4, the body's output, as in the Grad-CAM paper
    ("resnet18", 64, "0.5.1", 8),  # layer2's last block: the body's own map is 2x2 here
    ("resnet18", 32, "0.4.1", 8),  # layer1's last block: the body's own map is 1x1 here
    ("resnet18", 24, "0.4.1", 6),
    ("resnet18", 16, None, None),
    ("efficientnet_lite0", 224, "0", 7),
    ("efficientnet_lite0", 64, "0.net._blocks.4", 8),  # the last block at stride 8
    ("efficientnet_lite0", 32, "0.net._blocks.2", 8),  # the last block at stride 4
    ("efficientnet_lite0", 16, None, None),  # block 0 keeps 8x8, but at stride 2: edges, not parts
])
def test_the_layer_chosen_for_the_apps_backbones_at_each_size(arch, size, name, side):
    model = build_classifier(arch, 10, pretrained=False, size=size).model.eval()
    layer = grad_cam_layer(model, size)
    assert (layer and layer.name, layer and layer.side) == (name, side)
    assert not model.training and all(not m._forward_hooks for m in model.modules())  # nothing left behind


def test_at_sixteen_pixels_grad_cam_is_a_sentence_not_a_flat_tint():
    model, image = strided_network(), torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    note = grad_cam_note(None, 16)
    assert "16 px" in note and "cannot show where the model looked" in note
    with pytest.raises(AttributionUnavailable, match="16 px"):
        attribute(model, image, [0], "grad_cam")
    assert attribute(model, image, [0], "saliency").shape == (1, 16, 16)  # the pixel methods still answer


def test_a_map_from_an_eight_by_eight_layer_is_smooth_at_thirty_two_pixels():
    model = strided_network()
    image = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    image[:, :, 4:12, 20:28] = 255
    heat = attribute(model, image, [int(model(image.float()).argmax())], "grad_cam")[0]
    assert heat.shape == (32, 32) and heat.max() == pytest.approx(1.0) and heat.min() >= 0
    # bicubic between the 8x8 cells: neighbouring pixels differ by little, and no 4x4 block is one flat value
    assert np.abs(np.diff(heat, axis=1)).max() < 0.35
    blocks = heat.reshape(8, 4, 8, 4).transpose(0, 2, 1, 3).reshape(64, 16)
    assert (blocks.std(1) > 0).sum() > 32


def test_grad_cam_of_a_real_digits_run_at_32_px_is_not_flat(trained_run):
    from core.data.load import load_source
    from core.inspect.interpret import load_predictions, top_losses
    from core.runs.checkpoint import load_model
    from core.runs.folder import RunFolder

    model, _, config = load_model(trained_run)
    assert config.size == 32 and grad_cam_layer(model, 32).side == 8
    predictions = load_predictions(trained_run)
    data = load_source(config.data, config.size, edits=False)
    position = {name: i for i, name in enumerate(data.item_names)}
    rows = [position[name] for name in RunFolder(trained_run).data_items()]
    worst = top_losses(predictions, 8)
    images = data.images[[rows[i] for i in predictions.item_ids[worst]]]
    targets = [int(predictions.predicted[p]) for p in worst]
    heats = attribute(model, images, targets, "grad_cam").reshape(len(worst), -1)
    # The evidence the layer holds for each class, before Grad-CAM keeps its positive part: it varies over every
    # image (at the body's 1x1 map every one was a single flat value, std 0), whatever this run learned
    evidence = LayerGradCam(model, grad_cam_layer(model, 32).module).attribute(
        normalize(images), target=torch.tensor(targets), relu_attributions=False).reshape(len(worst), -1)
    assert (evidence.std(1) > 0.05 * evidence.abs().amax(1)).all(), evidence.std(1)
    # Where some of it speaks for the class, the map shows where (a map with none is black: which images those are
    # depends on the machine the run trained on), and each image gets its own map
    shown = heats.max(1) > 0
    assert shown.sum() >= 2 and (heats[shown].std(1) > 0.05).all(), heats.std(1)
    first, second = heats[shown][:2]
    assert np.abs(first - second).mean() > 0.05
