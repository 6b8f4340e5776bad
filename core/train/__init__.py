"""Training: the one loop, its callbacks, fastai's recipe, the LR finder, progress, estimates, the run process."""
