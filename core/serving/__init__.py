"""Serving films to clinicians: prediction with triage priority and warnings, Grad-CAM, the chest-film
check, and the per-session cache of decoded films."""
