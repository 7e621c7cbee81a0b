"""Where analyses live: the result files and their SQLite index (results), and the
transaction helper shared with the inbox (db).

May import: itself, ``service.errors``. It stores reports and files; it does not
know how they are made.
"""
