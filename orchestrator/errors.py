"""One error tree. The CLI prints ``str(err)`` on one line and exits with ``err.exit_code``."""
from __future__ import annotations


class OrchestrateError(Exception):
    """Base of every error a user can cause or a host can report."""

    exit_code = 1
    hint: str | None = None

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class SpecError(OrchestrateError):
    """The job file is wrong: names file, line and key. Exit 2."""

    exit_code = 2


class UsageError(OrchestrateError):
    """A command-line argument is wrong (unknown run id, bad flag combination). Exit 2."""

    exit_code = 2


class ConnectError(OrchestrateError):
    """A host cannot be reached or authenticated."""


class HostKeyError(ConnectError):
    """A host key is unknown or changed: refused, with fingerprints."""


class RemoteError(OrchestrateError):
    """A command or API call on a host failed."""


class ImageError(OrchestrateError):
    """The image tarball is missing, corrupt or does not match its checksum."""


class PreflightError(OrchestrateError):
    """A preflight check failed on one or more hosts."""


class RunFailed(OrchestrateError):
    """The job ran and at least one node failed (or the watchdog fired)."""


class ReportError(OrchestrateError):
    """A report cannot be made (no metrics, bad baseline)."""


class HostErrors(OrchestrateError):
    """Several hosts failed the same step; the message names every one of them."""

    def __init__(self, step: str, failures: dict[str, BaseException]):
        self.step = step
        self.failures = failures
        names = ", ".join(failures)
        details = "; ".join(_one_line(e) if _one_line(e).startswith(f"{h}:") else f"{h}: {_one_line(e)}"
                            for h, e in failures.items())
        super().__init__(f"{step} failed on {len(failures)} host(s) [{names}]: {details}")
        codes = {getattr(e, "exit_code", 1) for e in failures.values()}
        self.exit_code = 2 if codes == {2} else 1


def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())
