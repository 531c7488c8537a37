"""The record of one run: the executed notebook, its HTML and ``record.json``, with secrets
redacted and facts read back."""
