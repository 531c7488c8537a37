"""Postmortem review: the incident timeline, times, views and charts from archived records."""
