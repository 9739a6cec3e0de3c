"""``banditd``: the server's command line (every flag also as BANDITD_<FLAG>)."""

from __future__ import annotations

import sys

import click

from banditd.server import __version__
from banditd.server.app import BanditServer, ServeConfig, run_until_stopped
from banditd.server.calls import reward_command, select_command
from banditd.server.demo_experiment import DEMO_ID
from banditd.server.quickstart import banner


@click.group(context_settings={"show_default": True})
@click.version_option(__version__, prog_name="banditd")
def main() -> None:
    """banditd: the multi-armed-bandit decision server."""


def _option(flag: str, env: str, *names: str, **kwargs):
    """A ``serve`` option that can also come from the environment variable ``env``."""
    return click.option(flag, *names, envvar=env, show_envvar=True, **kwargs)


@main.command("serve")
@_option("--database-url", "BANDITD_DATABASE_URL", default=None,
         help="PostgreSQL URL (production). Without it, an embedded PostgreSQL runs "
              "under --data-dir.")
@_option("--data-dir", "BANDITD_DATA_DIR", default=".banditd",
         type=click.Path(file_okay=False),
         help="Directory of the embedded PostgreSQL (used when --database-url is unset).")
@_option("--host", "BANDITD_HOST", default="127.0.0.1", help="Address to serve gRPC on.")
@_option("--port", "BANDITD_PORT", default=50051, type=click.IntRange(0, 65535),
         help="gRPC port (0 picks a free one).")
@_option("--metrics-host", "BANDITD_METRICS_HOST", default="127.0.0.1",
         help="Address of the Prometheus endpoint.")
@_option("--metrics-port", "BANDITD_METRICS_PORT", default=9095,
         type=click.IntRange(0, 65535), help="Prometheus metrics port (0 disables it).")
@_option("--log-dir", "BANDITD_LOG_DIR", default="logs", type=click.Path(file_okay=False),
         help="Directory for app.log, workers.log, api.log.")
@_option("--grace", "BANDITD_GRACE", "grace_seconds", default=10.0,
         type=click.FloatRange(0, 600), help="Seconds in-flight calls get to finish on SIGTERM.")
@_option("--max-connection-age", "BANDITD_MAX_CONNECTION_AGE", default=None,
         type=click.FloatRange(1, 86_400),
         help="Seconds after which the server asks a client connection to go away (after "
              "its calls finish), so round_robin clients re-resolve and spread over hosts "
              "and workers added since; default: connections live as long as the client.")
@_option("--database-wait", "BANDITD_DATABASE_WAIT", default=60.0,
         type=click.FloatRange(0, 86_400),
         help="Seconds to wait, retrying with back-off, for PostgreSQL to accept connections "
              "at start (health answers NOT_SERVING meanwhile).")
@_option("--sync-interval", "BANDITD_SYNC_INTERVAL", default=1.0,
         type=click.FloatRange(0.05, 3600),
         help="Seconds between polls of the other servers' committed statistics and of "
              "experiment changes (the safety net under LISTEN/NOTIFY).")
@_option("--redis-url", "BANDITD_REDIS_URL", default=None,
         help="Redis (redis://host:6379/0) through which the servers of one deployment "
              "hand each other committed statistics within milliseconds; optional, the "
              "PostgreSQL poll is the fallback.")
@_option("--migrate/--no-migrate", "BANDITD_MIGRATE", default=False,
         help="Apply pending migrations at start (always done for the embedded default).")
@_option("--create-demo", "BANDITD_CREATE_DEMO", is_flag=True,
         help="Create and start a 'demo' experiment when none exists.")
@_option("--workers", "BANDITD_WORKERS", default="1",
         help="Worker processes serving the one address ('auto': the usable cores, "
              "the CPU limit in a container).")
def serve_command(metrics_port: int, workers: str, **options) -> None:
    """Serve Select and Reward over gRPC until SIGTERM/SIGINT.

    Exit codes: 0 stopped cleanly, 1 failed to start (e.g. the port is taken) or
    workers kept dying, 2 bad usage or configuration, 5 database unreachable or not
    migrated."""
    from banditd.server import logs
    from banditd.server.workers import Supervisor, parse_workers

    try:
        count = parse_workers(workers)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--workers") from None
    if options["redis_url"]:
        from banditd.server.redis_fanout import check_redis_url

        try:
            check_redis_url(options["redis_url"])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--redis-url") from None
    if count > 1 and options["port"] == 0:
        raise click.BadParameter("--workers > 1 needs a fixed --port (every worker binds it)",
                                 param_hint="--port")
    logs.configure(options["log_dir"])
    config = ServeConfig(metrics_port=metrics_port or None, **options)
    on_started = _print_how_to_call if config.create_demo else None
    if count == 1:
        sys.exit(run_until_stopped(config, on_started=on_started))
    sys.exit(Supervisor(config, count).run())


async def _print_how_to_call(server: BanditServer) -> None:
    """Tell the operator how to reach the demo experiment (after the start-up log lines)."""
    from banditd.server import logs

    logs.flush()
    click.echo(banner(f"{server.config.host}:{server.port}", DEMO_ID), err=True)


main.add_command(select_command)
main.add_command(reward_command)


if __name__ == "__main__":
    main()
