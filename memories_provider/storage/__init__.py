"""Storage glue: smart-open sources and atomic destinations, credentials from Airflow connections."""
