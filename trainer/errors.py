"""The one error type a user of the trainer sees as a single line (exit code 2)."""


class UserError(Exception):
    """A mistake in the command line, the data or the environment, not a bug.

    train.main prints it as one line without a traceback (TRAINER_DEBUG=1 shows one).
    """
