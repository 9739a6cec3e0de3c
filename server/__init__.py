"""banditd server: gRPC decision service over in-memory bandit state checkpointed to PostgreSQL."""

import os

__version__ = "0.1.0"

# No banditd process forks a child that goes on using gRPC: its children exec at once
# (pg_ctl, for the embedded PostgreSQL, also at exit). gRPC's fork handlers then have
# nothing to protect, and with them on, grpc logs "skipping fork() handlers" whenever
# such a child starts while its threads are busy. Read when gRPC initialises, so this
# must be set before the first channel or server exists.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
