"""Default configuration files, installed with the package."""
