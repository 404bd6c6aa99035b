"""Errors a user can act on: the CLI prints them without a traceback."""


class SvmfuzzError(Exception):
    pass
