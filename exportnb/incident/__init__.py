"""An incident and the runbook's diagnostic steps over it."""
