"""``python -m training``: see :mod:`training.run`."""

from .run import main

raise SystemExit(main())
