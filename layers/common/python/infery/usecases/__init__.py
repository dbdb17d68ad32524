"""What the API does, step by step: transcribe (reserve, infer, settle or refund), run a job from its request to
its webhook, report usage, redrive stuck jobs.

Each use case talks to the outside world only through the Protocols of ``ports``; it imports the domain, never an
adapter (``tests/unit/test_layers.py`` checks it).
"""
