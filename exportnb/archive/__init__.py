"""The archive: write-once storage of records, their hash chain, integrity checks, retention
and the search index."""
