"""`infery`: the operator's tool (keys, credits, usage) and, later, a client for humans."""
