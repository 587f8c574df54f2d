"""Helpers of the end-to-end benchmark: sandboxes as child processes, measurement, reconciliation, the table."""
