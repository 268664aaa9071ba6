# smsinbox in a container: `smsinbox serve` on port 8080, its SQLite default in the
# /var/lib/smsinbox volume. docs/deployment.md describes running it alone and with compose.
#
#   docker build -t smsinbox .
#   docker run -p 8080:8080 -v smsinbox-data:/var/lib/smsinbox smsinbox
#
# Any other command runs the same way: `docker run ... smsinbox db upgrade`.

# The package and its dependencies are installed into a virtual environment that the
# final stage copies whole, leaving the source tree and the build tools behind.
FROM python:3.12-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/smsinbox
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN /opt/smsinbox/bin/pip install . \
    && /opt/smsinbox/bin/pip uninstall --yes pip

FROM python:3.12-slim-bookworm
LABEL org.opencontainers.image.title="smsinbox" \
      org.opencontainers.image.description="A self-hostable SMS inbox server" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed uid and gid, so files and secrets on the host can be given to it.
RUN groupadd --system --gid 10001 smsinbox \
    && useradd --system --uid 10001 --gid smsinbox --home-dir /var/lib/smsinbox \
       --no-create-home --shell /usr/sbin/nologin smsinbox \
    && install --directory --owner=smsinbox --group=smsinbox --mode=0750 /var/lib/smsinbox
COPY --from=build /opt/smsinbox /opt/smsinbox
# SMSINBOX_DATABASE_URL must be emptied where SMSINBOX_DATABASE_URL_FILE is used instead:
# a setting given both ways is an error.
ENV PATH=/opt/smsinbox/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SMSINBOX_DATABASE_URL=sqlite:////var/lib/smsinbox/smsinbox.db \
    SMSINBOX_HOST=0.0.0.0 \
    SMSINBOX_PORT=8080
WORKDIR /var/lib/smsinbox
VOLUME /var/lib/smsinbox
USER 10001:10001
EXPOSE 8080
# The image has no curl: Python asks /healthz (on SMSINBOX_PORT), ignoring any HTTP proxy
# set in the environment; an error or a refused connection exits 1, unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.build_opener(r.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('SMSINBOX_PORT', '8080'), timeout=4)"]
# SIGTERM (docker stop) lets requests in progress finish; give it time: docker stop -t 30.
STOPSIGNAL SIGTERM
ENTRYPOINT ["smsinbox"]
CMD ["serve"]
