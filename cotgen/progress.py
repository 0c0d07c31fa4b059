"""Progress bars where someone watches: a terminal, a notebook, or a stage under `cotgen run`.

`tqdm.auto` draws a widget in Jupyter and text elsewhere. Stages run by `cotgen run` are subprocesses whose
output is a pipe, so the runner sets `COTGEN_PROGRESS=1` for them when it is itself watched (its stderr is a
terminal, or it runs in a notebook kernel); `COTGEN_PROGRESS=0|1` set by the user wins everywhere. Unwatched
(CI logs, files), stages log one line per unit of work with the rate and the ETA instead.
"""

from __future__ import annotations

import os
import sys

ENV = "COTGEN_PROGRESS"


def in_notebook() -> bool:
    shell = sys.modules.get("IPython") and getattr(sys.modules["IPython"], "get_ipython", lambda: None)()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def wanted() -> bool:
    value = os.environ.get(ENV)
    if value is not None:
        return value.strip().lower() not in ("", "0", "false", "no")
    return sys.stderr.isatty() or in_notebook()


def bar(**kwargs):
    """A tqdm bar (`tqdm.auto`: a widget in a notebook) writing to stderr, or None when nobody watches."""
    if not wanted():
        return None
    from tqdm.auto import tqdm

    return tqdm(dynamic_ncols=True, file=sys.stderr, **kwargs)


def eta(done: int, total: int, seconds: float) -> str:
    """'ETA 3m20s' from the work done so far in `seconds`."""
    if done <= 0 or seconds <= 0:
        return "ETA ?"
    left = max(total - done, 0) * seconds / done
    minutes, secs = divmod(int(left + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"ETA {hours}h{minutes:02d}m" if hours else f"ETA {minutes}m{secs:02d}s"
