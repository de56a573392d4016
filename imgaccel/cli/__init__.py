"""The ``imgaccel`` command line: a thin shell over the services.

Each sub-command lives in its own module here and is registered below; modules import the service
they start lazily, so ``imgaccel --help`` stays fast.
"""

from __future__ import annotations

import importlib

import click

from imgaccel import __version__

#: command name -> "module:attribute" (each a click command or group).
COMMANDS = {
    "node": "imgaccel.cli.node:node",
    "config": "imgaccel.cli.config:config",
    "seeder": "imgaccel.cli.seeder:seeder",
    "containerd-config": "imgaccel.cli.hostconfig:containerd_config",
    "docker-config": "imgaccel.cli.hostconfig:docker_config",
    "certs": "imgaccel.cli.certs:certs",
    "tracker": "imgaccel.cli.tracker:tracker",
    "prewarm": "imgaccel.cli.prewarm:prewarm",
    "cache": "imgaccel.cli.cache:cache",
    "snapshot": "imgaccel.cli.snapshot:snapshot",
    "doctor": "imgaccel.cli.doctor:doctor",
    "status": "imgaccel.cli.status:status",
}


class LazyGroup(click.Group):
    """A group that imports a sub-command's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="imgaccel")
def main() -> None:
    """imgaccel: pull huge container images fast on GPU clusters.

    Run `imgaccel node` on every node and point containerd (hosts.toml, see
    `imgaccel containerd-config`) or dockerd (`imgaccel docker-config`) at it.
    """
