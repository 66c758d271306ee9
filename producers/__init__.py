"""The sending side over a broker, and the broker rungs it drives: kombu, celery."""
