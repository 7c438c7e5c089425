"""Apache Airflow provider for the memories.ai video-understanding API."""

__version__ = "0.1.0"
