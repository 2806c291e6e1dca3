"""Console output, log files and progress reporting, shared by every stage.

* Messages go to the ``mlff_distiller`` logger: per-epoch metrics, gate results, stage
  starts, warnings. :func:`say` logs an INFO line and, when no console handler is installed
  (library use), also prints it to stderr, so a script or notebook still sees it.
* :func:`setup_console` (called by the command line) installs one stderr handler: INFO lines
  as they are, warnings prefixed ``warning:``; ``quiet`` keeps only warnings and errors.
  Python warnings (``warnings.warn``) are routed through logging as well.
* A record logged with ``extra=FILE_ONLY`` goes to the log file only, not to the console.
* :func:`log_to_file` appends everything (INFO and up, with time stamps) to a file for as
  long as the ``with`` block runs: ``mlff-distill run`` writes ``PROJECT/logs/run.log``,
  ``mlff-distill train`` writes ``RUN/train.log``.
* :func:`progress` is a tqdm bar on a terminal (or in a notebook); anywhere else (a batch
  job, output piped to a file) it logs one line per ``interval`` seconds instead, so a
  batch log holds a readable record rather than thousands of bar refreshes. Those lines are a
  heartbeat: none is printed while the stage itself printed something (an epoch's metrics, a
  warning) within the last ``interval`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

LOGGER = "mlff_distiller"
FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: seconds between two one-line progress reports in a non-interactive run
PROGRESS_INTERVAL = float(os.environ.get("MLFF_DISTILL_PROGRESS_INTERVAL", "30"))

_console: logging.Handler | None = None
log = logging.getLogger(LOGGER)
PROGRESS_LOGGER = LOGGER + ".progress"
#: monotonic time of the last console line that was not a progress line (see LineProgress)
_last_line = [float("-inf")]


def _note_line(name: str) -> None:
    if name != PROGRESS_LOGGER:
        _last_line[0] = time.monotonic()


class _ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            prefix = "warning" if record.levelno == logging.WARNING else "error"
            msg = f"{prefix}: {msg}"
        return msg


class _TqdmHandler(logging.StreamHandler):
    """A stderr handler that does not tear an active tqdm bar apart."""

    def emit(self, record: logging.LogRecord) -> None:
        _note_line(record.name)
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _ensure_level() -> None:
    lg = logging.getLogger(LOGGER)
    if lg.level == logging.NOTSET or lg.level > logging.INFO:
        lg.setLevel(logging.INFO)


#: pass as ``extra=`` to a logging call whose line belongs in the log file only (detail a batch
#: job's terminal does not need, e.g. one narrow labelling chunk)
FILE_ONLY = {"file_only": True}


def _not_file_only(record: logging.LogRecord) -> bool:
    return not getattr(record, "file_only", False)


def setup_console(quiet: bool = False) -> logging.Handler:
    """Install (once) the command line's stderr handler; ``quiet``: warnings and errors only."""
    global _console
    if _console is None:
        _console = _TqdmHandler(sys.stderr)
        _console.setFormatter(_ConsoleFormatter())
        _console.addFilter(_not_file_only)
        # matplotlib warns once per missing font family ("findfont: ...") when a plot's mathtext
        # falls back to DejaVu Sans: ~20 lines of noise per report on a machine without STIX/cm fonts
        logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
        logging.getLogger(LOGGER).addHandler(_console)
        logging.getLogger("py.warnings").addHandler(_console)
        logging.getLogger("py.warnings").propagate = False
        logging.captureWarnings(True)
    _console.setLevel(logging.WARNING if quiet else logging.INFO)
    _ensure_level()
    return _console


def console_installed() -> bool:
    return _console is not None


@contextlib.contextmanager
def log_to_file(path):
    """Append every message (INFO and up, and Python warnings) to ``path`` inside the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    handler.setLevel(logging.INFO)
    lg, pw = logging.getLogger(LOGGER), logging.getLogger("py.warnings")
    old_level = lg.level
    _ensure_level()
    lg.addHandler(handler)
    pw.addHandler(handler)
    captured = _console is not None  # the console handler already routes warnings
    logging.captureWarnings(True)
    try:
        yield path
    finally:
        lg.removeHandler(handler)
        pw.removeHandler(handler)
        handler.close()
        if not captured:
            logging.captureWarnings(False)
        if _console is None:
            lg.setLevel(old_level)


def say(text: str, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
    """Log ``text``; without the command line's console handler, also print it to stderr."""
    (logger or log).log(level, text)
    if _console is None:
        _note_line((logger or log).name)
        try:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)
        except Exception:  # noqa: BLE001
            print(text, file=sys.stderr, flush=True)


def interactive() -> bool:
    """True on a terminal or in a Jupyter kernel (where a live bar makes sense)."""
    try:
        if sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):
        return False
    return "ipykernel" in sys.modules


class LineProgress:
    """tqdm's small interface (``update``, ``set_postfix``, ``write``, ``close``) as periodic lines.

    One line per ``interval`` seconds (``desc: 120/480 (25 %), 3.1 struct/s, ETA 2 min``)
    and one when closed, through :func:`say`. With a known total a line also waits until the
    count has moved by ``min_step`` (5 %) of it, or ``10 x interval`` has passed, so an
    hour-long step prints about 20-30 lines rather than one every interval. No periodic line
    is printed while other lines (not progress) reached the console within the last interval:
    a stage that reports on its own (per-epoch metrics) needs no heartbeat.
    """

    def __init__(self, iterable=None, total=None, desc: str = "", unit: str = "it", initial: int = 0,
                 interval: float | None = None, logger: logging.Logger | None = None, **_ignored):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        self.desc = desc or "progress"
        self.unit = unit
        self.n = int(initial or 0)
        self._start_n = self.n
        self.interval = PROGRESS_INTERVAL if interval is None else float(interval)
        self.min_step = 0.05  # fraction of the total between two periodic lines
        self._last_n = self.n
        self.postfix = ""
        self._t0 = self._last = time.monotonic()
        self._closed = False
        self._reported = False
        self._logger = logger or logging.getLogger(PROGRESS_LOGGER)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = time.monotonic()
        if self.total and self.n >= self.total and not self._closed:
            self._reported = self._reported or now - self._t0 >= self.interval
            return  # finished: the closing "done in" line says it once
        quiet = now - _last_line[0] >= self.interval  # nothing else printed lately
        if quiet and now - self._last >= self.interval and self._moved_enough(now):
            self._last, self._last_n = now, self.n
            self._report()

    def _moved_enough(self, now: float) -> bool:
        if not self.total or now - self._last >= 10 * self.interval:
            return True
        return self.n - self._last_n >= self.min_step * self.total

    def set_postfix(self, *args, refresh: bool = True, **kw) -> None:
        items = dict(*args, **kw) if (args or kw) else {}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        pass

    def write(self, text: str, *args, **kwargs) -> None:
        say(text, self._logger)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reported:  # a task shorter than one interval gets no line at all
            self._report(final=True)

    def _report(self, final: bool = False) -> None:
        self._reported = True
        elapsed = time.monotonic() - self._t0
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.n}"]
        if self.total:
            parts = [f"{self.n}/{self.total} ({100.0 * self.n / self.total:.0f} %)"]
        parts.append(f"{rate:.3g} {self.unit}/s")
        if self.total and rate > 0 and not final:
            parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
        if final:
            parts.append(f"done in {_duration(elapsed)}")
        if self.postfix:
            parts.append(self.postfix)
        say(f"{self.desc}: " + ", ".join(parts), self._logger)


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def progress(iterable=None, total=None, desc: str = "", unit: str = "it", enabled: bool = True, **kw):
    """A progress reporter: a tqdm bar when interactive, :class:`LineProgress` otherwise.

    ``enabled=False`` gives a bar that shows nothing (every method still works). Keyword
    arguments are tqdm's; those a line reporter has no use for are ignored.
    """
    from tqdm.auto import tqdm

    if not enabled:
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=True)
    if interactive():
        kw.setdefault("dynamic_ncols", True)
        kw.setdefault("file", sys.stderr)
        return tqdm(iterable, total=total, desc=desc, unit=unit, **kw)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=kw.get("initial", 0))
