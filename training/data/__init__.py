"""What the networks learn from: the phantom generator (phantoms/), the EMIDEC reader,
the sources that put both behind one interface, the training datasets and their
augmentation.

May import: itself and ``service.pipeline`` (the preprocessing the service runs).
"""
