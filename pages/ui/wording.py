"""What the package records, as the pages say it: a UTC time stamp in this machine's time zone to the minute, and
an error as its message alone (the worker and the runs record ``ExceptionClass: message``; the class name is for the
traceback, not for the audience), whole or as a table cell's headline (short paths, a few lines)."""
import datetime as dt
import re

# the class name the job worker and failed runs put before the message ("ValueError: ", "OutOfMemoryError: ")
EXCEPTION_NAME = re.compile(r"^[A-Z]\w*(Error|Exception|Interrupt|Warning): ")
WRAPPED_ROW_PX = 88  # px: a table row of four lines of 14 px text (the grid wraps a cell's text in rows above 64 px)
HEADLINE_CHARS = 110  # characters of a message in such a row: four lines of a column of about 240 px
WRAPPED_ROWS_SHOWN = 6  # such rows a table shows before it scrolls (Streamlit's default height shows four)
# a path's folders, before its last name ('/work/runs/x/model.safetensors': '/work/runs/x/'); not in a URL
PATH = re.compile(r"(?<![\w.:/])(?:~|\.{1,2})?(?:/[^\s/:()]+)+/(?=[^\s/:()]+)")


def local_time(stamp: str | None) -> str:
    """A UTC ISO 8601 time in this machine's time zone, minutes only: '2026-12-07T21:43:11+00:00' -> '2026-12-07
    21:43 UTC' ('' for none; an unreadable stamp as it is): every recorded time the pages show."""
    try:
        return dt.datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M %Z") if stamp else ""
    except (TypeError, ValueError):
        return str(stamp)


def message(error: str | None) -> str:
    """``error`` as recorded ('ValueError: run x has no pruned model') in the product's voice: the message alone
    ('run x has no pruned model'); '' for none."""
    return EXCEPTION_NAME.sub("", error or "", count=1)


def headline(error: str | None, limit: int) -> str:
    """:func:`message` made to fit a table cell: its paths by their last name ('…/job.json'), its first line, cut
    after its last whole word within ``limit`` characters (with '…': the whole text is in the details)."""
    whole = PATH.sub("…/", message(error)).strip()
    line = whole.split("\n", 1)[0].strip()
    if len(line) > limit:
        return line[:limit].rsplit(" ", 1)[0].rstrip(" ,;:(") + " …"
    return line if line == whole else line + " …"


def wrapped_height(rows: int) -> int:
    """px of a table of ``rows`` rows of :data:`WRAPPED_ROW_PX` (and its header): every row up to
    :data:`WRAPPED_ROWS_SHOWN`, then it scrolls."""
    return (WRAPPED_ROW_PX + 1) * min(rows, WRAPPED_ROWS_SHOWN) + 39
