"""Where analyses live: the result files and their SQLite index (results), the
transaction helper shared with the inbox (db), the durable file writes that the
store, the inbox and the batch outputs share (files), and the free-space rule that turns
a full disk into 507 for all three (space), and the layout of an analysis' stored arrays
(arrays).

May import: itself, ``service.errors``. It stores reports and files; it does not
know how they are made.
"""
