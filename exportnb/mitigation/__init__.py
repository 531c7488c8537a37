"""Mitigations: what each action changes, its plan, confirmation, application, journal and
policy."""
