"""Evaluation of the exported models, in the order it runs: ``scoring`` (every method on
one labelled series, through the service's pipeline code), ``summary`` (medians with
intervals, comparisons, the release's targets), ``plots`` (box, Bland-Altman, the worst
validation cases) and ``report`` (EVALUATION.md and the README's table).

Imports: ``training``, ``service.pipeline``, ``service.viewer`` (the figures' overlay).
"""
