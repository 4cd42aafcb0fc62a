"""Qustody credential scanner: detectors, engine, notebook walker."""
