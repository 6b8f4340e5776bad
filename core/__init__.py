"""Transfer Learning Studio engine: data, models, training, run folders, analysis.

Nothing in this package imports streamlit; the dashboard and the command line are both clients of it.
"""
