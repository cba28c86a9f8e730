"""``python -m airflow_provider_searchapi``: see :mod:`airflow_provider_searchapi.cli`."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # Standard output carries the command's result alone. Airflow 3.0 and 3.1 write log lines there
    # (3.0 while it is being imported), so the result is written to a copy of the descriptor and the
    # descriptor itself is pointed at standard error.
    result = open(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding=sys.stdout.encoding)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    from airflow_provider_searchapi.cli import main

    sys.exit(main(out=result))
