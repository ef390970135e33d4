"""Subcommands of the ``nezha`` CLI; each module has ``add_arguments(parser)`` and ``run(args) -> int``."""
