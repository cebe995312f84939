"""Analyses of a controlled backbone study: agreement, calibration, representations, relevancy, ablations."""
