"""The backends' one error type, in a module of its own: the numerics check
(:mod:`.numerics`) raises it and the base class (:mod:`.base`) both raises it and calls that
check, so neither of the two can be where it lives without the two importing each other."""


class BackendError(RuntimeError):
    """A backend stage that cannot be used (export failed, wrong shapes, outputs disagree with
    eager): the point is an ``error`` whose message names the backend and the stage."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line (runtimes raise multi-line C++ traces)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"
