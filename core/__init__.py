"""Transfer Learning Studio engine: data, models, training, run folders, analysis.

Nothing in this package imports streamlit; the dashboard and the command line are both clients of it.
"""
import os

# OpenMP's threads (libgomp, in torch's CPU wheel) spin 300,000 times waiting for work before they sleep. With
# another training on the same cores, each process's spinning threads took the cores the other needed: a digits run
# took 3.5-4.7x its time alone beside another training. Spinning 1,000 times: 1.8-1.9x beside one, 2-3% slower alone
# (`python -m bench.beside`). Set before torch loads OpenMP, and inherited by the runs the app starts; a value the
# person set wins.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")
