"""``python -m training``: see :mod:`training.run`."""

from training.run import main

raise SystemExit(main())
