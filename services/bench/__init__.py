"""`orderflow bench`: throughput and latency on the real services, against the floor of the stack."""
