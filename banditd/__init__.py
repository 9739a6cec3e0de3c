"""banditd: generated wire-contract stubs live in ``banditd.v1`` (built from ``proto/``)."""
