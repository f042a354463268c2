# The ixb command (hubs, agency responders) for docker-compose.yml.
# Configs and keys are not in the image: compose mounts deploy/compose/ at /ixb.
# The base image is pinned to an exact release (Python 3.11.14, Debian 12):
# upgrade it on purpose, with the test suite, never by a rebuild.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY pyproject.toml README.md /src/
COPY protocols /src/protocols
COPY broker /src/broker
COPY agency_client /src/agency_client
COPY ixb /src/ixb
RUN pip install /src && rm -rf /src

# Not root; docker-compose.yml runs it as the owner of deploy/compose/ instead.
USER 65534:65534
ENTRYPOINT ["ixb"]
