"""The broker rungs, one module each as local_ipc/ has the local ones: each composes a
sending side (producers/) and a receiving side (consumers/, or Celery's workers)."""
