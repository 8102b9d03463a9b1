"""Errors that the CLI turns into one line and exit status 2 (bad input), or into a failed trial.

    from trainables.errors import is_recurring
    try: ...
    except Exception as exc:
        if is_recurring(exc): report_failure(exc)    # a retry would fail the same way
        else: raise                                   # let the scheduler retry (lost node, full disk, ...)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# torch's RuntimeErrors for a model that does not fit its input or its weights (the text is all torch gives us)
SHAPE_MISMATCH_TEXTS = (
    "size mismatch",  # load_state_dict
    "shapes cannot be multiplied",  # a linear layer fed the wrong number of features
    "must match the size of tensor",
    "sizes of tensors must match",
    "expected input batch_size",
    "given groups=",  # a conv fed the wrong number of channels
    "calculated padded input size",
    "kernel size can't be greater than actual input size",
    "output size is too small",
)
# Exception types that come from the code or the input, never from the machine: a retry runs the same code on the
# same input. (OSError, MemoryError, a CUDA error or an out-of-memory depend on the node and its neighbours.)
RECURRING_TYPES: tuple[type[BaseException], ...] = (
    ImportError,
    SyntaxError,
    NameError,
    AttributeError,
    TypeError,
    NotImplementedError,
)


class BadInput(ValueError):
    """A user's input is wrong: a file, a key, a value. The message names the thing and the fix."""


def near_hint(word: object, known: Iterable[str]) -> str:
    """The fix for an unknown name: the nearest known one, or the list to pick from."""
    known = list(known)
    near = difflib.get_close_matches(str(word), known, n=1, cutoff=0.6)
    listing = ", ".join(known)
    return f"did you mean '{near[0]}'? (known: {listing})" if near else f"use one of: {listing}"


class TrialDiverged(RuntimeError):
    """The loss went NaN/inf: the trial stops with this reason (``scan.failure``), the caller goes on."""


class BadCheckpoint(BadInput):
    """A checkpoint that cannot be loaded: missing, truncated, corrupt, or holding objects other than weights and
    plain values (a pickle that would run code is refused before anything in it runs)."""


class NonFiniteInput(BadInput):
    """An event with a NaN or inf pixel, found where its batch is read. The message names the file and the event.

    A DataLoader worker's error comes back to the main process as ``NonFiniteInput(<the worker's traceback>)``; the
    constructor keeps only the line that says what is wrong, so the trial's failure reads the same in either case.
    """

    def __init__(self, message: str):
        super().__init__(_own_line(str(message), type(self).__name__))


def _own_line(text: str, name: str) -> str:
    marker = f"{name}: "
    lines = [line for line in text.splitlines() if marker in line]
    return lines[-1].split(marker, 1)[1] if lines else text


def is_recurring(exc: BaseException) -> bool:
    """True when a retry of the trial would fail the same way: bad input (data, config, checkpoint, NaN pixels), a
    diverged loss, an import or programming error, a model that does not fit its input or weights. False for what
    may depend on the machine (I/O, memory, CUDA, lost workers), and for an interruption."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:  # `raise X from Y`: either one decides
        seen.add(id(exc))
        if isinstance(exc, (BadInput, TrialDiverged, *RECURRING_TYPES)):
            return True
        if type(exc) is RuntimeError and any(t in str(exc).lower() for t in SHAPE_MISMATCH_TEXTS):
            return True
        exc = exc.__cause__
    return False
