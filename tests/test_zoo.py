"""Backbones from the timm zoo (`timm:NAME`): weights from a file where there is no network, every family shaped
as maps (a ViT's tokens on their grid), layer groups, a real run on the digits, Grad-CAM and the Layers page's
layer list. timm's weights come from the Hugging Face hub, which these machines cannot reach: the tests save
random weights to files, as the README says a machine without a network does."""
import pytest
import timm
import torch
from safetensors.torch import save_file

from core.config import TrainConfig
from core.data.load import load_source
from core.inspect.attribution import attribute
from core.net import zoo
from core.net.arch import WeightsUnavailable
from core.net.backbones import build_classifier, feature_layers
from core.runs import store
from core.runs.checkpoint import load_model
from core.runs.folder import RunFolder
from core.train.run import run_training

CNN, VIT = "mobilenetv3_small_050", "vit_tiny_patch16_224"


def weights_file(tmp_path, name: str, seed: int = 0) -> str:
    torch.manual_seed(seed)
    path = tmp_path / f"{name}.safetensors"
    save_file(timm.create_model(name, pretrained=False).state_dict(), str(path))
    return str(path)


@pytest.mark.parametrize("name", [CNN, VIT])
def test_a_weights_file_is_loaded_into_the_body_and_every_family_gives_maps(tmp_path, name):
    path = weights_file(tmp_path, name)
    classifier = build_classifier(f"timm:{name}", 10, pretrained=True, size=32, weights=path)
    from safetensors.torch import load_file

    saved = load_file(path)
    body_state = classifier.body.net.state_dict()
    shared = [key for key in body_state if key in saved and "pos_embed" not in key]
    assert len(shared) > 20 and all(torch.equal(body_state[key], saved[key]) for key in shared)
    features = classifier.body.eval()(torch.zeros(2, 3, 32, 32))
    assert features.dim() == 4 and features.shape[:2] == (2, classifier.head[-1].in_features)
    assert classifier.model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    early, late, head = classifier.groups
    assert early and late and head and not {id(p) for p in early} & {id(p) for p in late}
    assert {id(p) for p in head} == {id(p) for p in classifier.head.parameters()}


def test_a_vit_is_built_for_the_image_size_and_its_tokens_lie_on_their_grid(tmp_path):
    classifier = build_classifier(f"timm:{VIT}", 3, pretrained=True, size=64, weights=weights_file(tmp_path, VIT))
    assert classifier.body.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 192, 4, 4)  # 64 / 16 patches a side
    grid = zoo.TokenGrid(n_prefix=1)
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float).reshape(2, 5, 3)  # a class token and 2x2 patches
    maps = grid(tokens)
    assert maps.shape == (2, 3, 2, 2) and maps[0, :, 0, 1].tolist() == tokens[0, 2].tolist()
    assert ("0.grid", classifier.body.grid) in feature_layers(classifier.model)


def test_a_timm_backbone_sees_images_normalized_as_its_weights_were_trained(tmp_path):
    from core.data.batches import normalize

    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    vit = build_classifier(f"timm:{VIT}", 3, pretrained=True, size=32, weights=weights_file(tmp_path, VIT)).body
    config = timm.data.resolve_data_config({}, model=vit.net)
    assert config["mean"] == config["std"] == (0.5, 0.5, 0.5)  # augreg weights: not ImageNet's statistics
    mean, std = (torch.tensor(config[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():  # what timm's own transforms would feed it, against what the batches here are
        theirs = vit.grid(vit.net.eval().forward_features((images / 255 - mean) / std))
        assert torch.allclose(vit.eval()(normalize(images)), theirs, atol=1e-4)
    cnn = build_classifier(f"timm:{CNN}", 3, pretrained=True, size=32, weights=weights_file(tmp_path, CNN)).body
    assert isinstance(cnn.norm, torch.nn.Identity)  # trained on ImageNet's statistics: nothing to do
    assert not any("norm.s" in key for key in vit.state_dict())  # follows from the name: not saved in checkpoints


def test_a_weights_file_of_another_model_or_a_damaged_one_is_a_sentence(tmp_path):
    with pytest.raises(WeightsUnavailable, match=f"{VIT}.safetensors (does not fit|could not be loaded into)"):
        build_classifier(f"timm:{CNN}", 3, pretrained=True, size=32, weights=weights_file(tmp_path, VIT))
    headless_vit = tmp_path / "vit_features.safetensors"  # without its classifier, still another model
    save_file(timm.create_model(VIT, pretrained=False, num_classes=0).state_dict(), str(headless_vit))
    for arch in (f"timm:{CNN}", "resnet18"):
        with pytest.raises(WeightsUnavailable, match="does not fit this backbone .*missing"):
            build_classifier(arch, 3, pretrained=True, size=32, weights=str(headless_vit))
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"not a tensor file")
    with pytest.raises(WeightsUnavailable, match="damaged.safetensors"):
        build_classifier(f"timm:{CNN}", 3, pretrained=True, size=32, weights=str(damaged))
    with pytest.raises(WeightsUnavailable, match="could not be loaded"):  # the built-in backbones read files too
        build_classifier("resnet18", 3, pretrained=True, size=32, weights=str(damaged))


@pytest.mark.parametrize("arch", ["resnet18", "timm:resnet18", f"timm:{CNN}", f"timm:{VIT}"])
@pytest.mark.parametrize("head", ["none", "another task's"])
def test_a_backbone_saved_without_its_classifier_loads_into_the_body(tmp_path, arch, head):
    """A feature extractor's weights (timm's num_classes=0 state dict), or a model fine-tuned for other classes: the
    body takes every weight, the new head is the run's own. Such files were refused ("Missing key(s) ... fc.weight")."""
    name = {"resnet18": "resnet18"}.get(arch, arch.removeprefix("timm:"))
    torch.manual_seed(1)
    saved = timm.create_model(name, pretrained=False, num_classes=0 if head == "none" else 7).state_dict()
    path = tmp_path / "backbone.safetensors"
    save_file(saved, str(path))
    classifier = build_classifier(arch, 3, pretrained=True, size=32, weights=str(path))
    body = classifier.body.state_dict()
    prefix = "net." if arch.startswith("timm:") else ""
    weights = {key: value for key, value in saved.items()  # a ViT's position embeddings are resampled to 32 px
               if not key.startswith(("fc.", "head.", "classifier.")) and key != "pos_embed"}
    if arch == "resnet18":  # torchvision's layers in a Sequential: conv1 is 0, bn1 1, layer1 4, …
        renamed = dict(zip(["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"], range(8)))
        weights = {f"{renamed[key.split('.')[0]]}.{key.split('.', 1)[1]}": value for key, value in weights.items()}
    assert weights and all(torch.equal(body[prefix + key], value) for key, value in weights.items())
    assert classifier.model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_without_a_network_a_timm_backbone_says_what_to_do(monkeypatch):
    monkeypatch.setattr(zoo, "_hub_reachable", lambda: False)  # these machines cannot reach the hub anyway
    with pytest.raises(WeightsUnavailable, match="--weights FILE"):
        build_classifier("timm:resnet18.a1_in1k", 3, pretrained=True, size=32)


def test_the_config_knows_exactly_the_backbones_the_registry_builds():
    """config.py names the built-in backbones without importing the network (core.net sits above it); the two lists
    are one list."""
    from core.config import BUILTIN_ARCHS
    from core.net.backbones import ARCHS

    assert tuple(ARCHS) == BUILTIN_ARCHS


def test_unknown_timm_names_and_missing_weights_files_are_config_problems(tmp_path):
    assert "arch" in TrainConfig(arch="timm:no_such_model").problems()
    assert TrainConfig(arch="timm:convnext_nano.in12k_ft_in1k").problems() == {}
    assert "weights" in TrainConfig(weights=str(tmp_path / "missing.safetensors")).problems()
    assert all(zoo.known(key) for key in zoo.TIMM_BACKBONES)


def test_a_timm_run_trains_on_the_digits_from_a_weights_file_and_its_model_explains_itself(tmp_path):
    config = TrainConfig(arch=f"timm:{CNN}", weights=weights_file(tmp_path, CNN), size=32, bs=64, epochs=2,
                         freeze_epochs=1, lr=1e-2)
    run_dir = store.create_run(config, tmp_path / "runs", "timm")
    assert run_training(run_dir) == "completed", RunFolder(run_dir).status()
    assert "--weights" in RunFolder(run_dir).command and "timm:" in RunFolder(run_dir).command
    best = max(row["accuracy"] for row in RunFolder(run_dir).read_metrics().epochs)
    assert best > 0.3  # chance is 0.1; random weights, two epochs
    model, class_names, _ = load_model(run_dir)
    images = load_source("builtin:digits", 32).images[:4]
    heat = attribute(model, images, [0, 1, 2, 3], "grad_cam")
    assert heat.shape == (4, 32, 32) and (heat.reshape(4, -1).std(1) > 0).all()


def test_the_layers_page_reads_a_vit_block_as_maps_and_its_attention_per_head(tmp_path):
    from core.inspect.visualize import activations, attention_maps, channel_maxima

    model = build_classifier(f"timm:{VIT}", 3, pretrained=True, size=64, weights=weights_file(tmp_path, VIT)).model
    model.eval()
    image = load_source("builtin:digits", 64).images[0]
    blocks = [name for name, module in feature_layers(model) if type(module).__name__ == "Block"]
    assert len(blocks) == 12
    maps, channels = activations(model, blocks[5], image, top=8)
    assert maps.shape == (8, 4, 4) and len(channels) == 8
    assert channel_maxima(model, blocks[-1], image[None].repeat(3, 1, 1, 1)).shape == (3, 192)
    attention = attention_maps(model, image)
    assert attention.shape == (3, 4, 4)  # vit_tiny has 3 heads; 16 patches
    assert attention.sum((1, 2)) == pytest.approx([1.0] * 3, abs=0.2)  # most of each head's weight is on patches
    cnn = build_classifier(f"timm:{CNN}", 3, pretrained=True, size=32, weights=weights_file(tmp_path, CNN)).model
    assert attention_maps(cnn, load_source("builtin:digits", 32).images[0]) is None


@pytest.mark.slow
def test_the_train_page_lists_timm_backbones_asks_for_a_weights_file_and_says_how_long_a_run_takes(runs_env):
    from tests.test_pages import by_label, open_page

    app = open_page("pages/train.py", run_id=None)
    backbone = by_label(app.selectbox, "Backbone")
    assert set(zoo.TIMM_BACKBONES.values()) <= set(backbone.options)  # shown by their labels
    said = " ".join(c.value for c in app.caption)  # the whole run: starting, decoding and training
    assert "About" in said and "to start and decode the images" in said and "of training" in said
    backbone.set_value("timm:convnext_nano.in12k_ft_in1k").run()
    assert not app.exception
    weights = by_label(app.text_input, "Weights file, where there is no network (optional)")
    weights.set_value("/no/such/file.safetensors").run()
    start = next(b for b in app.button if b.label == "Start training")
    start.click().run()
    assert any("weights must be a file that exists" in e.value for e in app.error)


def test_grad_cam_reads_a_vit_through_its_token_grid_and_says_when_the_grid_is_too_coarse(tmp_path):
    from core.inspect.attribution import AttributionUnavailable

    path = weights_file(tmp_path, VIT)
    images = load_source("builtin:digits", 128).images[:2]
    model = build_classifier(f"timm:{VIT}", 3, pretrained=True, size=128, weights=path).model.eval()
    heat = attribute(model, images, [0, 1], "grad_cam")  # 8x8 patches at 128 px
    assert heat.shape == (2, 128, 128) and (heat.reshape(2, -1).std(1) > 0.05).all()
    small = build_classifier(f"timm:{VIT}", 3, pretrained=True, size=64, weights=path).model.eval()
    with pytest.raises(AttributionUnavailable, match="96 px"):
        attribute(small, load_source("builtin:digits", 64).images[:1], [0], "grad_cam")


@pytest.mark.slow
def test_the_layers_page_shows_a_vit_run_s_attention_head_by_head(tmp_path, monkeypatch):
    from tests.test_pages import by_label, open_page

    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path / "runs"))
    config = TrainConfig(arch=f"timm:{VIT}", weights=weights_file(tmp_path, VIT), size=32, epochs=1, freeze_epochs=0)
    assert run_training(store.create_run(config, tmp_path / "runs", "vit")) == "completed"
    app = open_page("pages/layers.py", run_id="vit")
    by_label(app.radio, "View").set_value("Activations").run()
    assert not app.exception, [e.value for e in app.exception]
    assert "Where the class token looks" in [h.value for h in app.subheader]
