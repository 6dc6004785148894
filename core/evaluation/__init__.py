"""Evaluation: metrics with 95 % intervals at the operating point (a Report), on stored
probabilities or on a class-folder tree of films."""
