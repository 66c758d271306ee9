# queue-ladder: one image for the Celery workers, Flower and `ladder demo` (see compose.yaml).
# The base image is named, by tag, in compose.yaml alone (x-base-images), which passes it here.
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}

# MPLCONFIGDIR: matplotlib wants a writable folder, also as a user with no home (`user:`).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib

RUN useradd --create-home --uid 1000 ladder

WORKDIR /app
# The exact versions of requirements/image.txt (`make lock`), checked against their hashes:
# no extra (in compose, Redis is a service of its own) and no dev tools. A layer of its
# own, rebuilt only when the lock changes.
COPY requirements/image.txt requirements/
RUN pip install --require-hashes -r requirements/image.txt

# The project's files one by one, so that nothing else (.env, .venv, .git, results) gets in.
COPY pyproject.toml README.md ./
COPY core/ core/
COPY tasks/ tasks/
COPY local_ipc/ local_ipc/
COPY producers/ producers/
COPY consumers/ consumers/
COPY broker_ipc/ broker_ipc/
COPY ladder/ ladder/
COPY servers/ servers/
COPY peers/ peers/
COPY docker/ docker/
# The project alone: its dependencies are in already, and the lock pins its build backend.
# pip check: a requirement that pyproject.toml gained without `make lock` stops the build.
RUN pip install --no-deps --no-build-isolation . \
 && pip check \
 && mkdir results && chown ladder:ladder results

# The credentials compose's `setup` service made, into the command's environment.
ENTRYPOINT ["/app/docker/entrypoint.sh"]
USER ladder
CMD ["ladder", "--help"]
