"""Transports carry a :class:`~airflow_provider_searchapi.models.SearchRequest` to the API."""
