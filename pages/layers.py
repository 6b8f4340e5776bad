"""Layers: what a network learned (filters), what it sees in one image (activations, attributions), which
images excite a channel, and the basics of images and convolutions for newcomers."""
import hashlib

import numpy as np
import streamlit as st
import torch

from core.data.health import MAX_FILE_BYTES
from core.data.images import decode_image
from core.errors import DataError
from core.inspect.attribution import METHODS, grad_cam_layer, grad_cam_note, top_predictions
from core.inspect.labelsets import LabelSetPredictions
from core.inspect.visualize import (
    KERNELS,
    activations,
    apply_learned_filter,
    attention_maps,
    conv_filters,
    convolve,
    filter_kernel,
    filter_slices,
    first_conv,
    grayscale,
    top_images_for_channel,
)
from core.net.backbones import conv_layers, describe_layer, feature_layers
from pages._common import (
    IMAGE_SIZES,
    cached_attribution,
    cached_channel_maxima,
    current_dataset,
    imagenet_model,
    model_key,
    pick_finished_run,
    route_through_app,
    run_images,
    run_model,
    run_predictions,
)
from pages._figures import image_grid, overlay_grid, pixel_figure, to_hwc
from pages._text import md

route_through_app()
MAX_CANDIDATES = 256  # images searched for "what excites this channel": enough to find 12, and answers in ~1 s

st.title("Layers")
look_at = st.radio("Look inside", ["A trained run", "The pretrained network alone (ImageNet)"],
                   horizontal=True, help="The pretrained network is EfficientNet-Lite0 as ImageNet trained it, with "
                                         "its 1,000 classes, before any training here.")
pretrained_only = look_at != "A trained run"
if pretrained_only:
    size = st.select_slider("Image size (pixels)", IMAGE_SIZES, value=128)
    model, class_names = imagenet_model("efficientnet_lite0", size)
    key = f"imagenet/efficientnet_lite0/{size}"
    data = current_dataset(size)
    picks = np.random.default_rng(0).permutation(len(data))[:MAX_CANDIDATES]
    candidates, captions = data.images[picks], [data.label_of(i) for i in picks]
    multi_label = False  # ImageNet's 1,000 classes: a softmax
else:
    run_dir = pick_finished_run("to look inside the trained network")
    if run_dir is None:
        st.stop()
    model, class_names, config = run_model(run_dir)
    key, size = model_key(run_dir), config.size
    predictions = run_predictions(run_dir)
    multi_label = isinstance(predictions, LabelSetPredictions)  # its probabilities: each label's sigmoid
    candidates = run_images(run_dir)[predictions.item_ids]
    captions = predictions.label_texts(class_names)  # a run of label sets: each image's set

left, right = st.columns([1, 2])
use_upload = left.radio("Image", ["From the dataset", "Upload my own"], horizontal=True) == "Upload my own"
image = None
if use_upload:
    upload = right.file_uploader("An image (JPEG, PNG, WebP, BMP, GIF, TIFF)",
                                 type=["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"],
                                 max_upload_size=MAX_FILE_BYTES >> 20)
    if upload is not None:
        try:
            image, caption = decode_image(upload.getvalue(), size), upload.name
        except DataError as error:
            right.error(md(error))
if image is None:
    position = right.number_input(f"Image number (0–{len(candidates) - 1})", 0, len(candidates) - 1, 0)
    image, caption = candidates[position], captions[position]
image_key = hashlib.sha1(image.numpy().tobytes()).hexdigest()
layer_by_name = dict(feature_layers(model))
conv_names = [name for name, _ in conv_layers(model)]
feature_names = list(layer_by_name)


def layer_label(names: list[str], name: str) -> str:
    """A layer as a newcomer reads it: where it sits (early layers see edges, late ones whole objects), what it is,
    and its name in the code last, for whoever looks it up."""
    position = names.index(name)
    part = ("early", "middle", "late")[min(3 * position // max(len(names), 1), 2)]
    return f"{position + 1} of {len(names)}, {part}: {describe_layer(layer_by_name[name])} ({name})"


def pick_layer(label: str, names: list[str], default: int, key: str) -> str:
    return st.selectbox(label, names, index=min(default, len(names) - 1), key=key,
                        format_func=lambda name: layer_label(names, name))


view = st.radio("View", ["Filters", "Activations", "Attributions", "What excites a channel", "Basics"],
                horizontal=True, key="layers_view")

if view == "Filters":
    st.caption("A filter is a small grid of weights the network slides over its input, answering strongly where the "
               "input looks like it. First-layer filters see pixels, so they are drawn in colour: edges, colour "
               "blobs. Deeper filters see the previous layer's channels and are drawn one input channel at a time.")
    name = pick_layer("Convolution layer", conv_names, 0, "filters_layer")
    conv = layer_by_name[name]
    if conv.weight.shape[1] == 3:
        tiles = (conv_filters(conv) * 255).astype(np.uint8)
        st.plotly_chart(image_grid(tiles, [f"#{i}" for i in range(len(tiles))], columns=16, height_per_row=70))
    else:
        out = st.number_input(f"Filter (output channel 0–{conv.out_channels - 1})", 0, conv.out_channels - 1, 0)
        tiles, labels = filter_slices(conv, out)
        st.plotly_chart(image_grid(tiles, labels, columns=16, height_per_row=70))
    st.caption(f"`{name}`: {describe_layer(conv)}")

elif view == "Activations":
    st.caption("An activation map shows where in the image one channel responds: bright where its pattern is "
               "found. Early layers respond to edges at full detail; deeper layers to larger, more abstract parts "
               "at coarser resolution.")
    name = pick_layer("Layer", feature_names, len(feature_names) // 3, "activations_layer")
    maps, channels = activations(model, name, image, top=16)
    picture, grid = st.columns([1, 4])
    picture.image(to_hwc(image[None].numpy())[0], caption=md(caption), width="stretch")
    grid.plotly_chart(image_grid(maps, [f"channel {c}" for c in channels], columns=8, height_per_row=110))
    grid.caption("The 16 channels this image excites most, strongest first.")
    attention = attention_maps(model, image)  # None for a CNN
    if attention is not None:
        st.subheader("Where the class token looks")
        st.caption("A transformer's last block: how much its class token, which the decision is read from, attends "
                   "to each patch of the image, head by head (smoothed up to the image).")
        heads = torch.nn.functional.interpolate(torch.from_numpy(attention)[None], size=(size, size),
                                                mode="bicubic")[0].clamp_min(0).numpy()
        heads = heads / np.maximum(heads.reshape(len(heads), -1).max(1), 1e-12)[:, None, None]
        st.plotly_chart(overlay_grid(to_hwc(np.repeat(image[None].numpy(), len(heads), 0)), list(heads),
                                     [f"head {h}" for h in range(len(heads))], columns=min(len(heads), 6),
                                     opacity=0.6, height_per_row=180))

elif view == "Attributions":
    st.caption("Which pixels made the model choose a class. The heat map should sit on the thing the class is about, "
               "not on the background or a border: if it does not, the model may have learned a shortcut.")
    ranked = top_predictions(model, image, class_names, k=5, multi_label=multi_label)
    left, middle, right = st.columns(3)
    method = left.radio("Method", list(METHODS), format_func=lambda m: METHODS[m].label)
    target = middle.selectbox("Explain the class", class_names, index=class_names.index(ranked[0][0]),
                              help="The predicted class by default; choose any other to see what speaks for it.")
    opacity = right.slider("Heat map opacity", 0.0, 1.0, 0.5)
    st.caption(METHODS[method].explanation)
    heat = [None]
    cam_layer = grad_cam_layer(model, size) if method == "grad_cam" else None
    if method == "grad_cam" and cam_layer is None:  # no layer keeps enough cells at this size: say so, draw none
        st.info(md(grad_cam_note(cam_layer, size)))
    else:
        if cam_layer is not None:
            st.caption(md(grad_cam_note(cam_layer, size)))
        heat = cached_attribution(key, image_key, (class_names.index(target),), method, model, image[None])
    picture, table = st.columns([2, 1])
    picture.plotly_chart(overlay_grid(to_hwc(np.stack([image.numpy(), image.numpy()])), [None, heat[0]],
                                      [caption, f"{METHODS[method].label}: {target}"], columns=2, opacity=opacity,
                                      height_per_row=380))
    table.dataframe([{"class": c, "probability": f"{p:.1%}"} for c, p in ranked], hide_index=True)

elif view == "What excites a channel":
    st.caption("The images that make one channel respond most, as in Zeiler & Fergus's views of a network: "
               "first-layer channels find colours and edges, deeper ones textures and object parts.")
    name = pick_layer("Layer", feature_names, len(feature_names) // 3, "excite_layer")
    searched = candidates[:MAX_CANDIDATES]
    maxima = cached_channel_maxima(f"{key}/{len(searched)}", name, model, searched)
    channel = st.number_input(f"Channel (0–{maxima.shape[1] - 1})", 0, maxima.shape[1] - 1,
                              int(maxima.mean(0).argmax()), help="Starts at the channel with the strongest responses.")
    best, strength = top_images_for_channel(maxima, channel, k=12)
    st.caption(f"Searched {len(searched)} images.")
    st.plotly_chart(image_grid(to_hwc(searched[best].numpy()),
                               [f"{captions[i]} · {s:.2f}" for i, s in zip(best, strength)], columns=6,
                               height_per_row=150))

else:
    st.caption("To a computer an image is a grid of numbers: for each pixel, how much red, green and blue, "
               "from 0 to 255. Hover over the grids to read the values; zoom by dragging.")
    gray = grayscale(image)
    small = gray[::max(1, size // 24), ::max(1, size // 24)]
    columns = st.columns(4)
    columns[0].plotly_chart(pixel_figure(small, f"Brightness, every {max(1, size // 24)}th pixel"))
    for column, values, name, scale in zip(columns[1:], image.numpy(), ["Red", "Green", "Blue"],
                                           ["Reds_r", "Greens_r", "Blues_r"]):
        column.plotly_chart(pixel_figure(values, f"{name} channel", colorscale=scale, value_format=None))
    st.markdown("**A convolution at work.** A 3×3 filter slides over the image; at each place it multiplies the 9 "
                "pixels under it by its 9 weights and adds them up. The result is a new image that is bright where "
                "the pattern the filter describes is found.")
    kernel_name = st.selectbox("Filter", [*KERNELS, "One the network learned (first layer)"])
    if kernel_name in KERNELS:
        kernel, output = np.array(KERNELS[kernel_name]), convolve(gray, KERNELS[kernel_name])
    else:
        conv = first_conv(model)[1]
        index = st.number_input(f"Learned filter (0–{conv.out_channels - 1})", 0, conv.out_channels - 1, 0)
        kernel = filter_kernel(conv, index)
        output = apply_learned_filter(conv, index, image)
    a, b, c = st.columns(3)
    a.plotly_chart(pixel_figure(gray, "Input (grey)", value_format=None))
    b.plotly_chart(pixel_figure(kernel, "Filter weights", colorscale="RdBu", value_format=".2f"))
    c.plotly_chart(pixel_figure(output, "Output", value_format=None))
