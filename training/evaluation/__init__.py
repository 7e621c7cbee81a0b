"""Evaluation of the exported models: scoring per series, summaries and targets, figures,
and the EVALUATION.md writer, each in its own module."""
