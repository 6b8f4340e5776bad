"""Interpret: where a finished run's model goes wrong, from its validation predictions."""
import plotly.express as px
import streamlit as st

from core import runs
from core.interpret import confusion_matrix, most_confused
from pages._common import pick_finished_run, route_through_app, run_predictions

route_through_app()

st.title("Interpret")
run_dir = pick_finished_run("to see what the model confuses")
if run_dir is None:
    st.stop()

meta = runs.read_json(run_dir / "config.json")
class_names = [str(name) for name in meta.get("class_names", [])]
predictions = run_predictions(run_dir)
matrix = confusion_matrix(predictions.targets, predictions.predicted, len(class_names))

left, right = st.columns(2)
left.metric("Validation accuracy", f"{predictions.accuracy:.1%}")
right.metric("Mistakes", f"{int((predictions.predicted != predictions.targets).sum())} of {len(predictions.targets)}")

st.subheader("Confusion matrix")
st.caption("Each row is the actual class, each column what the model predicted: the diagonal is right, "
           "everything off it is a mistake.")
figure = px.imshow(matrix, x=class_names, y=class_names, text_auto=True, color_continuous_scale="Blues",
                   labels={"x": "Predicted", "y": "Actual", "color": "images"}, aspect="equal")
figure.update_xaxes(type="category", side="top").update_yaxes(type="category")
figure.update_layout(height=120 + 36 * len(class_names), margin=dict(l=0, r=0, t=30, b=0))
st.plotly_chart(figure, key="confusion")

st.subheader("Most confused")
off_diagonal = int(matrix.max(initial=0)) if len(class_names) else 0
min_val = st.slider("Show pairs confused at least this many times (min_val)", 1, max(2, off_diagonal), 1)
pairs = most_confused(matrix, class_names, min_val)
if pairs:
    st.dataframe([{"actual": a, "predicted": p, "count": n} for a, p, n in pairs], hide_index=True, width="content")
else:
    st.success(f"No pair of classes is confused {min_val} times or more.")
