"""The API function's routes, one powertools Router per resource (transcriptions, uploads and jobs, models, usage,
the console), and what they share (``dependencies``). The handler (functions/transcribe/app.py) includes them."""
