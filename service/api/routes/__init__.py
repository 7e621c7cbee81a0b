"""The contract's routes, one module per resource; each reads its request and hands it on.

``health`` is open; ``analyses`` (/v1), ``dicomweb`` (STOW-RS, /v1/series) and
``pages`` need the API key when one is set. Errors are raised as
:mod:`service.errors` exceptions and mapped to HTTP once, in
:mod:`service.api.errors`.
"""

from service.api.routes import analyses, dicomweb, health, pages

# Every router of the app, in the order it includes them.
ROUTERS = (health.router, analyses.router, dicomweb.received, dicomweb.router, pages.router)
