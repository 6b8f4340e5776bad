"""The Runs page's export: make and verify the files, then each format with its size, its verification and the lines
that use it, and the zip."""
import pandas as pd
import streamlit as st

from core.errors import BrokenRun, DataError
from core.runs import store
from core.ship.export import FORMATS, ExportError, describe, export_run, read_verification, zip_export
from core.ship.verify import INT8_FILES, MODEL_FILES, agreement_key
from pages._text import md

# what each optional format is called on the page
CHOICES = {"onnx-int8": "int8 ONNX (smaller)", "web": "web page (offline, no server)",
           "tflite": "LiteRT / TFLite (Android, iOS)", "tflite-int8": "int8 LiteRT (smaller)",
           "coreml": "Core ML (Apple devices only)"}

# (file, format, how it is used: language, the lines), in the order shown
USES = [
    ("model.onnx", "ONNX: Python, C#, C++, Java, JavaScript (onnxruntime)", "python", """\
import json, numpy as np, onnxruntime   # pixels: (1, S, S, 3) uint8, made as preprocessing.json's steps say
session = onnxruntime.InferenceSession("model.onnx")
probabilities, unknown_score, unknown = session.run(None, {"pixels": pixels})
print("none of these" if unknown[0] else json.load(open("classes.json"))[probabilities[0].argmax()])"""),
    ("model.int8.onnx", "int8 ONNX: the same interface, about half the size", "python", """\
session = onnxruntime.InferenceSession("model.int8.onnx")   # then as model.onnx"""),
    ("model.torchscript.pt", "TorchScript: PyTorch and LibTorch (C++)", "python", """\
model = torch.jit.load("model.torchscript.pt")
probabilities, unknown_score, unknown = model(torch.from_numpy(pixels))"""),
    ("web/index.html", "Web page: any browser, offline, no server", "text", """\
Unzip, then double-click web/index.html: choose or drop an image, or start the camera.
To put it on a website, upload that one file; it asks the network for nothing."""),
    ("model.tflite", "LiteRT: Android (Kotlin), iOS, embedded; model.int8.tflite the same, a quarter of the size",
     "kotlin", """\
val interpreter = Interpreter(FileUtil.loadMappedFile(context, "model.tflite"))  // com.google.ai.edge.litert
val outputs = mapOf("probabilities" to Array(1) { FloatArray(classes.size) },
                    "unknown_score" to FloatArray(1), "unknown" to BooleanArray(1))
interpreter.runSignature(mapOf("pixels" to pixels), outputs, "serving_default")  // pixels: 1×S×S×3 RGB bytes"""),
    ("model.mlpackage", "Core ML: iPhone, iPad, Mac (Swift; runs only on Apple systems)", "swift", """\
let model = try MLModel(contentsOf: MLModel.compileModel(at: packageURL))  // or drag it into Xcode
let image = try MLFeatureValue(cgImage: photo, pixelsWide: S, pixelsHigh: S,
                               pixelFormatType: kCVPixelFormatType_32ARGB)  // photo: made square as the app does
let out = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: ["image": image]))
print(out.featureValue(for: "classLabel")!.stringValue, out.featureValue(for: "unknown")!)  // unknown 1: none"""),
]


def show_export(run: store.RunSummary) -> None:
    """Export and verify on a click (seconds on a GPU, up to a few minutes on a CPU), then the formats, what the
    verification found and the zip; a run exported before shows them at once."""
    from core.ship.web import available

    offered = [name for name in FORMATS if name != "web" or available()]  # onnxruntime-web comes with setup.sh
    chosen = st.multiselect("Besides ONNX and TorchScript", offered, default=offered, format_func=CHOICES.get,
                            key=f"formats:{run.run_id}")
    if "web" not in offered:
        st.caption("The web page needs onnxruntime-web: run `scripts/setup.sh` once with a network to fetch it.")
    if st.button("Export and verify", key=f"export:{run.run_id}", icon=":material/verified:",
                 help="Writes the model files (each takes plain RGB pixels), runs every one over every validation "
                 "image and checks it predicts like the app."):
        with st.spinner("Exporting, then checking every file on every validation image…"):
            try:
                export_run(run.path, tuple(chosen))
            except (ExportError, BrokenRun, DataError, FileNotFoundError) as error:
                st.error(md(error))
    verification = read_verification(run.path)
    if not verification:
        return
    st.caption(md(describe(verification)))
    st.dataframe(format_table(verification), hide_index=True, width="stretch")
    for file, title, language, lines in USES:
        if file in verification["sizes"]:
            with st.expander(title):
                st.code(lines, language=language)
    st.download_button("Download the export", lambda run_dir=run.path: zip_export(run_dir),
                       file_name=f"{run.run_id}-export.zip", mime="application/zip", on_click="ignore",
                       icon=":material/download:", key=f"download:{run.run_id}",
                       help="A zip with every file above, classes.json, preprocessing.json, weights.safetensors and "
                       "verification.json; the README shows how to use it.")


def format_table(verification: dict) -> pd.DataFrame:
    """One row a model file: its size, how often it picks the app's class (a run of label sets: its label set), its
    accuracy (the share of yes/no label decisions right)."""
    key = agreement_key(verification)
    rows = [(file, verification["sizes"].get(file), verification[f"{name}_{key}"],
             verification["accuracy"][name], "full") for name, file in MODEL_FILES.items()
            if f"{name}_{key}" in verification]
    rows += [(INT8_FILES[name], verification["sizes"].get(INT8_FILES[name]), measured[key],
              measured["accuracy"], "int8") for name, measured in verification.get("int8", {}).items()]
    if "coreml" in verification:
        rows.append(("model.mlpackage", verification["sizes"].get("model.mlpackage"), None, None,
                     "full; Apple systems only (its interface and classes checked)"))
    if "web/index.html" in verification["sizes"]:
        rows.append(("web/index.html", verification["sizes"]["web/index.html"], verification[f"onnx_{key}"],
                     verification["accuracy"]["onnx"], "full (runs model.onnx)"))
    table = pd.DataFrame(rows, columns=["file", "size", "agrees with the app", "accuracy", "precision"])
    table["size"] = [f"{size / 1e6:.1f} MB" if size else "" for size in table["size"]]
    for column in ("agrees with the app", "accuracy"):
        table[column] = ["" if pd.isna(value) else f"{value:.1%}" for value in table[column]]
    return table
