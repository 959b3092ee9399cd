"""Training and evaluation entry points; each module also runs as `python training/<name>.py`."""
