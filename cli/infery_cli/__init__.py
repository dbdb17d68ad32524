"""`infery`: a client for humans (transcribe) and the operator's tool (keys, credits, usage)."""
