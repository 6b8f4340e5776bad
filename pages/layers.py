"""Layers: the filters a trained network learned, and what its layers respond to in one image."""
import numpy as np
import plotly.express as px
import streamlit as st

from core.models import conv_layers, describe_layer
from core.visualize import activations, conv_filters, first_conv
from pages._common import dataset, image_grid, pick_finished_run, route_through_app, run_model, run_predictions, to_hwc

route_through_app()

st.title("Layers")
run_dir = pick_finished_run("to look inside the trained network")
if run_dir is None:
    st.stop()

model, class_names, config = run_model(run_dir)

st.subheader("Filters of the first layer")
st.caption("Each tile is one 3×3 (or 7×7) filter of the first convolution, its red, green and blue weights shown "
           "as a colour: the patterns — edges, colour blobs — the network looks for directly in the pixels.")
name, conv = first_conv(model)
filters = conv_filters(conv)  # (out, kh, kw, 3) in 0..1
st.plotly_chart(image_grid((filters * 255).astype(np.uint8), [f"#{i}" for i in range(len(filters))], columns=16,
                           height_per_row=70), key="filters")
st.caption(f"Layer `{name}`: {describe_layer(conv)}")

st.subheader("Activations")
st.caption("An activation map shows where in the image a channel responds: bright where its pattern is found. "
           "Early layers respond to edges at full detail; deeper layers to larger, more abstract parts.")
layers = conv_layers(model)
names = [layer_name for layer_name, _ in layers]
left, right = st.columns([2, 1])
layer_name = left.selectbox("Convolution layer", names, index=min(len(names) - 1, len(names) // 3),
                            format_func=lambda n: f"{names.index(n) + 1:>3}. {n} — {describe_layer(dict(layers)[n])}")

data = dataset(config.data, config.size)
predictions = run_predictions(run_dir)
position = right.number_input(f"Validation image (0–{len(predictions.item_ids) - 1})", min_value=0,
                              max_value=len(predictions.item_ids) - 1, value=0, step=1)
item = int(predictions.item_ids[position])
image = data.images[item]  # (3, S, S) uint8
actual = class_names[predictions.targets[position]]
predicted = class_names[predictions.predicted[position]]

picture, maps_column = st.columns([1, 4])
picture.plotly_chart(px.imshow(to_hwc(image[None].numpy())[0]).update_layout(
    height=220, margin=dict(l=0, r=0, t=30, b=0), title=f"actual {actual} · predicted {predicted}",
    xaxis_visible=False, yaxis_visible=False), key="activation_image")
maps, channels = activations(model, layer_name, image, top=16)
maps_column.plotly_chart(image_grid(maps, [f"channel {c}" for c in channels], columns=8, height_per_row=110),
                         key="activation_maps")
maps_column.caption("The 16 channels this image excites most, strongest first.")
