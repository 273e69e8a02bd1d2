"""The one base class of the errors a user acts on."""


class UserError(Exception):
  """A fault of the user's input, files or machine whose message says what
  and where; commands end with it in one line (cli.run) besides ValueError
  and OSError."""
