"""Errors that reach the user as one line."""


class FakesegmentError(Exception):
    """Bad input or a refused operation: the CLI prints it on one line and exits with code 2."""


class ImageError(FakesegmentError):
    """One image could not be decoded; extraction reports it by name and goes on."""
