"""banditctl: the operator's command line and Python entry points for banditd."""
