"""Errors that reach the user as one line."""

__all__ = ["FakesegmentError", "ImageError", "ParameterError"]


class FakesegmentError(Exception):
    """Bad input or a refused operation: the CLI prints it on one line and exits with code 2."""


class ImageError(FakesegmentError):
    """One image could not be decoded; extraction reports it by name and goes on."""


class ParameterError(FakesegmentError):
    """A bad argument, named as the library names it: ``ParameterError("batch_size", "must be at least 1")``
    reads "batch_size must be at least 1". The CLI renames ``param`` to its flag (``--batch-size``),
    so library messages never mention flags and CLI messages never mention Python names."""

    def __init__(self, param: str, message: str):
        self.param, self.message = param, message
        super().__init__(f"{param} {message}")

    def as_flag(self, flag: str | None = None) -> str:
        """The same message naming ``flag`` (default: ``--`` + param with dashes) instead of param."""
        return f"{flag or '--' + self.param.replace('_', '-')} {self.message}"
