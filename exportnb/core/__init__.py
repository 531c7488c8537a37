"""The ground every other part stands on: the exception tree, the typed configuration,
quantities (sizes, durations), and findings."""
