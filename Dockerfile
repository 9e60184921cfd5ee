# Tracker's container image: the app in a virtual environment, run as a non-root user,
# with its SQLite log (used when TRACKER_DATABASE_URL is unset) on the /data volume.
#
#   docker build -t tracker .
#   docker run -d -p 6969:6969 -v tracker-data:/data tracker
#
# Every setting comes from the environment (TRACKER_*, see the README's Configuration);
# the image holds no key and no configuration file. BASE may be any Debian-like image:
# python:3.12-slim brings its own Python, a bare Debian base gets python3 from apt. Both
# stages start from the same BASE, so the virtual environment finds its interpreter at
# the same path in the final stage as where it was made.
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
RUN if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/tracker
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tracker ./tracker
COPY web ./web
# The PostgreSQL driver is in: one image serves both the SQLite file and PostgreSQL.
# pip itself (and setuptools, where the venv has it) is left out of the final image.
RUN /opt/tracker/bin/pip install --no-cache-dir --disable-pip-version-check '.[postgres]' \
    && /opt/tracker/bin/tracker --version \
    && /opt/tracker/bin/python -m pip uninstall --yes --quiet pip setuptools

FROM ${BASE}
RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
        && apt-get clean \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --gid 10001 tracker \
    && useradd --uid 10001 --gid tracker --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin tracker \
    && mkdir -p /data /app \
    && chown tracker:tracker /data \
    && chmod 0700 /data
COPY --from=build /opt/tracker /opt/tracker
ENV PATH=/opt/tracker/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRACKER_DB=/data/tracker.db
# Tracker also reads a `.env` file in its working directory: /app is empty and belongs to
# root, so none can appear there and the settings come from the environment only.
WORKDIR /app
USER tracker
# The SQLite log, its WAL and snapshot, and the key Tracker makes when TRACKER_SECRET_KEY
# is unset (tracker.db.secret). Unused on PostgreSQL.
VOLUME /data
EXPOSE 6969
# No curl in a slim image: the venv's Python asks /healthz (200 while the server runs).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/opt/tracker/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TRACKER_PORT', '6969'), timeout=4)"]
# SIGTERM: in-flight writes finish (what will not answers 503), live sockets close with
# 1001, and the process exits 0 within 10 s (give it a stop timeout above that).
STOPSIGNAL SIGTERM
CMD ["tracker", "serve", "--host", "0.0.0.0"]
