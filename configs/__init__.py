"""One ml-collections config file per study; `get_config(arg)` with arg a scale name."""
