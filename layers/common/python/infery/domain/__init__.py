"""What infery is about, with no AWS and no HTTP in it: keys, credits and the ledger's arithmetic, jobs and their
states, audio and its formats, prices, transcripts and the errors a client can see.

Imports nothing of the other layers (``tests/unit/test_layers.py`` checks it): the use cases, the adapters and the
model server build on it.
"""
