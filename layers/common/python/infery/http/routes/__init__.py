"""The API function's routes, one powertools Router per resource (transcriptions, uploads and jobs, models, usage,
the console), and what they share (``dependencies``). The handler (functions/transcribe/app.py) includes them.

Each module's ``router(deps)`` builds a new Router for the handler instance that calls it, its routes bound to
that instance's dependencies, so two instances (two loads of the handler in a test, whose requests may overlap,
as two Lambda environments) share nothing. A Router made once at module level would also read every request
from whichever resolver included it last.
"""
