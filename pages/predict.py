"""Predict: a model's top classes for your own images, from a trained run or the ImageNet network itself."""
import plotly.graph_objects as go
import streamlit as st

from core.attribution import top_predictions
from core.errors import DataError
from core.images import decode_image
from pages._common import imagenet_model, pick_finished_run, route_through_app, run_model
from pages._figures import to_hwc
from pages._text import md, plot

route_through_app()

st.title("Predict")
pretrained_only = st.radio("Model", ["A trained run", "The pretrained network alone (ImageNet, 1,000 classes)"],
                           horizontal=True, help="The pretrained EfficientNet-Lite0 recognises ImageNet's 1,000 "
                                                 "everyday classes before any training here.") != "A trained run"
if pretrained_only:
    size, resize = 224, "crop"  # as ImageNet networks are evaluated: the centre square at 224 px
    model, class_names = imagenet_model("efficientnet_lite0", size)
else:
    run_dir = pick_finished_run("to predict with its model")
    if run_dir is None:
        st.stop()
    model, class_names, config = run_model(run_dir)
    size, resize = config.size, config.resize
k = st.slider("Classes to show", 1, min(10, len(class_names)), min(5, len(class_names)))

uploads = st.file_uploader("Images (JPEG, PNG, WebP, BMP, GIF, TIFF)", accept_multiple_files=True,
                           type=["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"])
pictures = [(upload.name, upload.getvalue()) for upload in uploads or []]
if st.toggle("Use the camera"):
    photo = st.camera_input("Take a photo")
    if photo is not None:
        pictures.append(("camera photo", photo.getvalue()))
if not pictures:
    st.info("Drop one or more images here to see what the model makes of them.")
    st.stop()

for name, data in pictures:
    try:
        image = decode_image(data, size, resize)
    except DataError as error:
        st.error(f"{md(name)}: {md(error)}")
        continue
    ranked = top_predictions(model, image, class_names, k=k)
    picture, chart = st.columns([1, 3])
    picture.image(to_hwc(image[None].numpy())[0], caption=md(name), width="stretch")
    figure = go.Figure(go.Bar(x=[p for _, p in ranked][::-1], y=[plot(c) for c, _ in ranked][::-1], orientation="h",
                              text=[f"{p:.1%}" for _, p in ranked][::-1], textposition="auto"))
    figure.update_layout(height=60 + 32 * len(ranked), margin=dict(l=0, r=0, t=30, b=0), xaxis_range=[0, 1],
                         title=f"{plot(ranked[0][0])} ({ranked[0][1]:.1%})", xaxis_tickformat=".0%")
    chart.plotly_chart(figure, key=f"prediction:{name}")
