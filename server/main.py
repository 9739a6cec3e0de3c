"""``banditd``: the server's command line (every flag also as BANDITD_<FLAG>)."""

from __future__ import annotations

import asyncio
import sys

import click

from server import __version__
from server.app import BanditServer, ServeConfig, serve
from server.demo import DEMO_ID
from server.migrate import SchemaMismatchError


@click.group(context_settings={"auto_envvar_prefix": "BANDITD", "show_default": True})
@click.version_option(__version__, prog_name="banditd")
def main() -> None:
    """banditd: the multi-armed-bandit decision server."""


@main.command("serve")
@click.option("--database-url", default=None,
              help="PostgreSQL URL (production). Without it, an embedded PostgreSQL runs "
                   "under --data-dir.")
@click.option("--data-dir", default=".banditd", type=click.Path(file_okay=False),
              help="Directory of the embedded PostgreSQL (used when --database-url is unset).")
@click.option("--host", default="127.0.0.1", help="Address to serve gRPC on.")
@click.option("--port", default=50051, type=click.IntRange(0, 65535),
              help="gRPC port (0 picks a free one).")
@click.option("--metrics-host", default="127.0.0.1", help="Address of the Prometheus endpoint.")
@click.option("--metrics-port", default=9095, type=click.IntRange(0, 65535),
              help="Prometheus metrics port (0 disables the endpoint).")
@click.option("--log-dir", default="logs", type=click.Path(file_okay=False),
              help="Directory for app.log, workers.log, api.log.")
@click.option("--grace", "grace_seconds", default=10.0, type=click.FloatRange(0, 600),
              help="Seconds in-flight calls get to finish on SIGTERM.")
@click.option("--migrate/--no-migrate", default=False,
              help="Apply pending migrations at start (always done for the embedded default).")
@click.option("--create-demo", is_flag=True,
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
