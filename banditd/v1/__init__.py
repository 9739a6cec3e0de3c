"""Generated ``banditd.v1`` stubs; run ``pip install -e .`` to (re)generate them."""
