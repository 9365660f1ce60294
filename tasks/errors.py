"""The errors a flow expects: a bad input or a missing thing, said in words; reported in one line, never retried."""
from __future__ import annotations

from stages.common import USER_ERRORS
from tasks.lineage import TrackingUnavailable


class BatchRejected(RuntimeError):
    """The new batch broke the data contract; it is in quarantine and nothing was trained."""


# USER_ERRORS: bad params, source or file, a week without data (shared with the DVC stages). BatchRejected: the
# batch broke the data contract and is in quarantine. TrackingUnavailable: the MLflow server does not answer (the
# message says how to start it). LookupError: no such A/B experiment (but see is_expected for KeyError).
EXPECTED_ERRORS: tuple[type[Exception], ...] = (*USER_ERRORS, BatchRejected, TrackingUnavailable, LookupError)


def is_expected(exc: BaseException) -> bool:
    """One of EXPECTED_ERRORS; a KeyError or IndexError (also LookupErrors) is a bug, not a missing experiment."""
    return isinstance(exc, EXPECTED_ERRORS) and not isinstance(exc, (KeyError, IndexError))
