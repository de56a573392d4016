# imgaccel: one image for every role (node, tracker, seeder, containerd-config, certs).
#   docker build -t imgaccel:0.1.0 .
# The node DaemonSet runs it as root (securityContext): it writes the hostPath cache and the
# host's containerd hosts.toml. Tracker and seeders run as the unprivileged user below.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md* ./
COPY imgaccel ./imgaccel
RUN pip install . && rm -rf /src

RUN groupadd --system --gid 10001 imgaccel \
    && useradd --system --uid 10001 --gid imgaccel --home-dir /nonexistent --shell /usr/sbin/nologin imgaccel

WORKDIR /
USER 10001
EXPOSE 65001 6881 6970 6971
ENTRYPOINT ["imgaccel"]
CMD ["--help"]
