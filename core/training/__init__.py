"""Training a model version: patient-disjoint split, the loop, training-only augmentation, the operating
point, calibration, and shipping a version into the registry."""
