"""``imgaccel certs``: make the cluster CA and issue node (and tracker) certificates.

A thin shell over ``imgaccel.p2p.certs``. The CA key stays with the operator; each node gets
``ca.crt``, ``node.crt`` and ``node.key`` (in Kubernetes: one Secret, see docs/deploy.md).
"""

from __future__ import annotations

from pathlib import Path

import click

from imgaccel.p2p.certs import (
    CA_CERT,
    CA_KEY,
    NODE_CERT,
    NODE_KEY,
    Validity,
    issue,
    load_ca,
    make_ca,
)

_DIR = click.Path(file_okay=False, path_type=Path)


@click.group("certs")
def certs() -> None:
    """The cluster CA that peers and the tracker trust, and the certificates it signs."""


@certs.command("init")
@click.option("--dir", "directory", type=_DIR, required=True, help="Where ca.crt and ca.key go.")
@click.option("--cluster", default="imgaccel", show_default=True, help="Name in the CA's CN.")
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=3650,
    show_default=True,
    help="How long the CA is valid, from now. Every certificate it signed stops verifying "
    "when it ends: replacing it means new certificates everywhere (docs/deploy.md).",
)
@click.option("--force", is_flag=True, help="Replace an existing CA (every node must re-issue).")
def init(directory: Path, cluster: str, days: int, force: bool) -> None:
    """Create a new cluster CA in DIR (ca.key is written mode 0600)."""
    if (directory / CA_KEY).exists() and not force:
        raise click.ClickException(f"{directory / CA_KEY} exists; --force replaces it")
    ca = make_ca(cluster, days)
    ca.write(directory, CA_CERT, CA_KEY)
    click.echo(f"wrote {directory / CA_CERT} and {directory / CA_KEY}")
    click.echo(f"{CA_CERT} is valid until {Validity.of(ca.cert_pem).not_after:%Y-%m-%d %H:%M} UTC")


@certs.command("issue")
@click.option("--ca-dir", type=_DIR, required=True, help="The directory `certs init` wrote.")
@click.option("--out", type=_DIR, required=True, help="Where ca.crt, node.crt, node.key go.")
@click.option("--name", default="*", show_default=True, help="Common name (peers expect *).")
@click.option(
    "--dns", multiple=True, help="Extra DNS name, e.g. the tracker Service's (repeatable)."
)
@click.option("--ip", "ips", multiple=True, help="Extra IP address (repeatable).")
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=365,
    show_default=True,
    help="How long the certificate is valid, from now. Peers and the tracker refuse it "
    "afterwards: renew before (imgaccel doctor warns 30 days ahead).",
)
def issue_command(
    ca_dir: Path, out: Path, name: str, dns: tuple[str, ...], ips: tuple[str, ...], days: int
) -> None:
    """Issue a certificate signed by the cluster CA, good as TLS server and client."""
    try:
        ca = load_ca(ca_dir)
        pair = issue(ca, name, dns=("*", "localhost", *dns), ips=("127.0.0.1", *ips), days=days)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    pair.write(out, NODE_CERT, NODE_KEY)
    (out / CA_CERT).write_bytes(ca.cert_pem)
    click.echo(f"wrote {out / CA_CERT}, {out / NODE_CERT} and {out / NODE_KEY}")
    ends, ca_ends = Validity.of(pair.cert_pem).not_after, Validity.of(ca.cert_pem).not_after
    click.echo(f"{NODE_CERT} is valid until {ends:%Y-%m-%d %H:%M} UTC")
    if ca_ends < ends:
        click.echo(
            f"warning: the CA ends first, {ca_ends:%Y-%m-%d %H:%M} UTC: {NODE_CERT} stops "
            "verifying then (see docs/deploy.md, 'Renewing certificates')",
            err=True,
        )
