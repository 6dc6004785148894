"""Chest X-ray triage core: films, preprocessing, models, training, evaluation, explanations, CLI.

Never imports streamlit: the dashboard calls this package and only draws.
"""
