"""Predict: a model's top classes for your own images or a live camera, from a trained run (calibrated, and saying
when an image is none of its classes) or the ImageNet network itself."""
import plotly.graph_objects as go
import streamlit as st

from core.data.health import MAX_FILE_BYTES
from core.data.images import decode_image
from core.errors import BrokenRun, DataError
from core.runs.folder import RunFolder
from pages._common import imagenet_model, model_key, pick_finished_run, route_through_app, run_model
from pages._demo import (
    LiveClassifier,
    calibrated_classifier,
    label_chart,
    live_demo,
    plain_classifier,
    run_predictor,
    show_latest,
    trust_mtime,
)
from pages._figures import to_hwc
from pages._text import md, plot

route_through_app()


st.title("Predict")
pretrained_only = st.radio("Model", ["A trained run", "The pretrained network alone (ImageNet, 1,000 classes)"],
                           horizontal=True, help="The pretrained EfficientNet-Lite0 recognises ImageNet's 1,000 "
                                                 "everyday classes before any training here.") != "A trained run"
predictor = None
if pretrained_only:
    size, resize = 224, "crop"  # as ImageNet networks are evaluated: the centre square at 224 px
    model, class_names = imagenet_model("efficientnet_lite0", size)
else:
    run_dir = pick_finished_run("to predict with its model")
    if run_dir is None:
        st.stop()
    if not trust_mtime(run_dir):
        st.info(f"Run {md(run_dir.name)} was trained before this app calibrated its runs: the probabilities are the "
                "model's own, and it cannot say when an image is none of its classes. Train it again for both.")
    else:
        try:
            predictor = run_predictor(run_dir)
        except (FileNotFoundError, BrokenRun) as error:
            run_model(run_dir)  # stops with the checkpoint's own sentence when the model is what is damaged
            st.warning(f"{md(error)} Predicting without calibration; training the run again makes a new one.")
    if predictor is None:
        model, class_names, config = run_model(run_dir)
        size, resize = config.size, config.resize
    else:
        class_names, size, resize = predictor.class_names, predictor.size, predictor.resize
        from core.inspect.trust import unknown_caveat  # torch is loaded by now: the predictor holds the model

        n_valid = RunFolder(run_dir).data_record().get("n_valid")
        caveat = unknown_caveat(n_valid, len(class_names)) if isinstance(n_valid, int) else None
        if caveat:
            st.warning(caveat, icon=":material/help:")
multi = predictor is not None and predictor.thresholds is not None  # a run of label sets
if multi:
    st.caption("This run learnt several labels per image: each label has its own probability, and the image gets "
               "every label at or above the threshold chosen for it on validation (the marks on the bars).")
k = st.slider("Labels to show" if multi else "Classes to show", 1, min(10, len(class_names)),
              min(5, len(class_names)))
tta = predictor is not None and st.toggle(
    "Test-time augmentation", help="Steadier: each image is also seen as a few augmented copies and the "
                                   "probabilities averaged, as fastai's tta does. About 5× slower.")
classify = calibrated_classifier(predictor, tta) if predictor is not None else plain_classifier(model, class_names)

if not pretrained_only and st.radio("Show it", ["Images", "Live camera demo"], horizontal=True,
                                    help="The live demo classifies the camera's stream as it comes, for a room "
                                         "to watch.") == "Live camera demo":
    demo_key = ("live_demo", str(run_dir), model_key(run_dir), trust_mtime(run_dir), k, tta)
    if st.session_state.get("live_demo", (None,))[0] != demo_key:
        st.session_state["live_demo"] = (demo_key, LiveClassifier(classify, size, resize, len(class_names), k))
    demo = st.session_state["live_demo"][1]
    st.caption("Each frame is made square and resized as the run's images were, then classified; frames that "
               "arrive while one is being classified are skipped.")
    video, verdict = st.columns([3, 2])
    with video:
        context = live_demo(demo, key="live-demo")
    if context.state.playing:
        with verdict:
            show_latest(demo)
    st.stop()

uploads = st.file_uploader("Images (JPEG, PNG, WebP, BMP, GIF, TIFF)", accept_multiple_files=True,
                           type=["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"],
                           max_upload_size=MAX_FILE_BYTES >> 20)  # one image file's cap, as in a dataset
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
    prediction = classify(image[None], k)[0]
    picture, chart = st.columns([1, 3])
    picture.image(to_hwc(image[None].numpy())[0], caption=md(name), width="stretch")
    if multi:
        label_chart(chart, prediction, predictor, k, name)
        continue
    ranked = prediction.top
    title = f"{plot(ranked[0][0])} ({ranked[0][1]:.1%})"
    if prediction.unknown:
        chart.subheader(f"Not one of the {len(class_names)} classes")
        title += " is the closest"
    colour = "#9e9e9e" if prediction.unknown else None
    figure = go.Figure(go.Bar(x=[p for _, p in ranked][::-1], y=[plot(c) for c, _ in ranked][::-1], orientation="h",
                              text=[f"{p:.1%}" for _, p in ranked][::-1], textposition="auto", marker_color=colour))
    figure.update_layout(height=60 + 32 * len(ranked), margin=dict(l=0, r=0, t=30, b=0), xaxis_range=[0, 1],
                         title=dict(text=title, font_size=13 if prediction.unknown else None), xaxis_tickformat=".0%")
    chart.plotly_chart(figure, key=f"prediction:{name}")
