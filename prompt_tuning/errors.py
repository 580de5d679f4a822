"""The error type for bad input: a setting, file or command line to fix.

Raised before anything is loaded or written, with a message that names the
problem and the fix. Command lines (`prompt_tuning.cli`) print such errors
as one line, without a traceback; any other exception is a bug and keeps its
traceback.
"""


class ConfigError(ValueError):
  """A run setting, file or command-line flag is wrong; the message says
  which and how to fix it."""
