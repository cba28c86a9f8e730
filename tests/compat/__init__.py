"""The compatibility subset: what must work on every Airflow 3 minor version the provider supports.

``make test`` runs it on the project's Airflow with the rest of the suite; ``make test-matrix``
(``noxfile.py``) runs it, with ``tests/operators/test_example_dags.py``, on the newest patch release
of each Airflow 3 minor version.
"""
