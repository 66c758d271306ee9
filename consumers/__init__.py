"""The receiving side over a broker: kombu consumers, Celery workers, the record they keep."""
