"""Data: the classes, how many images each has, and sample images at the chosen size."""
import numpy as np
import plotly.express as px
import streamlit as st

from core.data import BUILTIN_DATASETS, DataError
from pages._common import IMAGE_SIZES, dataset, route_through_app
from pages._figures import image_grid, to_hwc

route_through_app()

st.title("Data")

sources = [f"builtin:{name}" for name in BUILTIN_DATASETS]
current = st.session_state["dataset"]
source = st.selectbox("Dataset", sources, index=sources.index(current) if current in sources else 0,
                      format_func=lambda s: BUILTIN_DATASETS[s.split(":", 1)[1]].label)
st.session_state["dataset"] = source
st.caption(BUILTIN_DATASETS[source.split(":", 1)[1]].description)

size = st.select_slider("Image size (pixels)", IMAGE_SIZES, value=st.session_state["image_size"],
                        help="The network sees every image resized to this square. Small is fast on a CPU; "
                             "pretrained networks see most at 128–224 px.")
st.session_state["image_size"] = size

try:
    data = dataset(source, size)
except DataError as error:
    st.error(str(error))
    st.stop()

counts = data.class_counts()
left, middle, right = st.columns(3)
left.metric("Images", f"{len(data):,}")
middle.metric("Classes", len(counts))
right.metric("Smallest class", f"{min(counts.values())} images")

st.subheader("Images per class")
figure = px.bar(x=list(counts), y=list(counts.values()), labels={"x": "class", "y": "images"})
figure.update_layout(height=300, margin=dict(l=0, r=0, t=10, b=0), xaxis_type="category")
st.plotly_chart(figure, key="class_counts")

st.subheader(f"Samples at {size}×{size} px")
rng = np.random.default_rng(0)
per_class = 2
picks = [int(i) for label in range(len(data.class_names))
         for i in rng.choice(np.flatnonzero(data.labels.numpy() == label), size=per_class, replace=False)]
st.plotly_chart(image_grid(to_hwc(data.images[picks].numpy()),
                           [data.class_names[data.labels[i]] for i in picks], columns=10), key="samples")
st.caption("The network is given each image normalized with ImageNet's channel mean and standard deviation, "
           "the statistics its pretrained layers were trained on; the app does this for you.")
