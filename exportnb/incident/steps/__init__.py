"""One module per runbook step: pure functions over platform data, each returning a result
the notebook renders and the record stores."""
