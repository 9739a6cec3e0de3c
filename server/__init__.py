"""banditd server: gRPC decision service over in-memory bandit state checkpointed to PostgreSQL."""

__version__ = "0.1.0"
