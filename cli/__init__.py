"""The `memento` command line."""
