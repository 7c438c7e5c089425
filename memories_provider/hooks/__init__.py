"""Airflow hooks of the memories.ai provider."""
