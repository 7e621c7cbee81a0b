"""Where analyses live: the result files and their SQLite index (results), the
transaction helper shared with the inbox (db), and the durable file writes that the
store, the inbox and the batch outputs share (files).

May import: itself, ``service.errors``. It stores reports and files; it does not
know how they are made.
"""
