"""The version of skymorph, in a module of its own so that importing it loads nothing else."""

__version__ = "0.2.0.dev0"
