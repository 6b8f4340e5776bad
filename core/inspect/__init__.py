"""Looking inside: interpretation, visualization, captum attributions, calibration and trust."""
