"""``banditd``: the server's command line (every flag also as BANDITD_<FLAG>)."""

from __future__ import annotations

import asyncio
import sys

import click

from server import __version__
from server.app import BanditServer, ServeConfig, serve
from server.demo import DEMO_ID
from server.migrate import SchemaMismatchError


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
@_option("--migrate/--no-migrate", "BANDITD_MIGRATE", default=False,
         help="Apply pending migrations at start (always done for the embedded default).")
@_option("--create-demo", "BANDITD_CREATE_DEMO", is_flag=True,
         help="Create and start a 'demo' experiment when none exists.")
def serve_command(metrics_port: int, **options) -> None:
    """Serve Select and Reward over gRPC until SIGTERM/SIGINT."""
    from server import logs

    logs.configure(options["log_dir"])
    config = ServeConfig(metrics_port=metrics_port or None, **options)
    try:
        asyncio.run(serve(config, on_started=_print_how_to_call if config.create_demo else None))
    except SchemaMismatchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    except KeyboardInterrupt:
        pass


async def _print_how_to_call(server: BanditServer) -> None:
    """Tell the operator how to reach the demo experiment."""
    address = f"{server.config.host}:{server.port}"
    click.echo(
        f"""
banditd is serving experiment '{DEMO_ID}' on {address}. Try it:

  grpcurl -plaintext -d '{{"experiment_id": "{DEMO_ID}", "user_id": "alice"}}' \\
      {address} banditd.v1.DecisionService/Select

  python - <<'PY'
  import grpc
  from banditd.v1 import decision_pb2 as pb, decision_pb2_grpc as rpc
  stub = rpc.DecisionServiceStub(grpc.insecure_channel("{address}"))
  d = stub.Select(pb.SelectRequest(experiment_id="{DEMO_ID}", user_id="alice"))
  print(d.arm, d.policy, d.propensity)
  print(stub.Reward(pb.RewardRequest(decision_id=d.decision_id, value=1.0)))
  PY
""",
        err=True,
    )


if __name__ == "__main__":
    main()
