"""Reading and validating a customer-segment CSV.

A file-level problem (missing, empty, not UTF-8, a required column absent) raises
:class:`InputError` so that nothing is sent. A row-level problem quarantines the row with
its line number and reason. A bad contact value keeps the customer but removes them from
every channel that sends to that column, with the reason kept beside it in
``<column>_error`` (:func:`error_column`). The contact checks are one table by column
(:func:`contact_checks`): this package knows columns, never channels.

:func:`load` is built for files of a million rows: pyarrow reads the file, the row checks are
column operations, and each distinct contact value is validated once, by two processes when
there are many. Its steps are the modules: :mod:`.reading` (the file), :mod:`.rows` (the row
checks), :mod:`.contacts` (the contact checks) and :mod:`.loader` (load() and its result).
The plain one-by-one reference it must match exactly is
:func:`campaign_pipeline.testing.reference.load_one_by_one`.
"""

from .contacts import (
    Check,
    ascii_address,
    check_device_token,
    check_email,
    check_phone,
    contact_checks,
    error_column,
    unchanged_where,
)
from .loader import Segments, load
from .reading import REQUIRED_COLUMNS, InputError, file_digest
from .rows import MAX_FIELD, MAX_RAW, REJECTED_COLUMNS

__all__ = [
    "MAX_FIELD",
    "MAX_RAW",
    "REJECTED_COLUMNS",
    "REQUIRED_COLUMNS",
    "Check",
    "InputError",
    "Segments",
    "ascii_address",
    "check_device_token",
    "check_email",
    "check_phone",
    "contact_checks",
    "error_column",
    "file_digest",
    "load",
    "unchanged_where",
]
