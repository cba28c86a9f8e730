"""``python -m airflow_provider_searchapi``: see :mod:`airflow_provider_searchapi.cli`."""

import os
import sys

if __name__ == "__main__":
    # Airflow 3.0 and 3.1 log to standard output (3.0 while being imported): the result goes to a copy
    # of that descriptor, and the descriptor itself to standard error.
    result = open(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding=sys.stdout.encoding)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    from airflow_provider_searchapi.cli import main

    sys.exit(main(out=result))
