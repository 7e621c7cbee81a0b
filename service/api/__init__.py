"""HTTP: the FastAPI app, its routes by resource, authentication, metrics, and the one
place where the service's errors become HTTP answers (``errors``).

May import anything of the service; nothing imports it but ``service.__main__``.
"""
