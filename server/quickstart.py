"""How to call a running banditd: the text ``banditd serve --create-demo`` prints.

The README's "Calling it" section carries the same text for the default address; a
test compares the two and runs the commands, so the snippet a newcomer pastes is the
one that is known to work.
"""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_ADDRESS = "127.0.0.1:50051"


def try_it(address: str, experiment_id: str, activate: str | None = None) -> str:
    """Shell commands that ask ``address`` for a decision and reward it (pasteable:
    no indentation, no here-document); ``activate`` is the virtual environment's
    activate script, sourced first so that a new terminal finds ``banditd``."""
    at = "" if address == DEFAULT_ADDRESS else f" --address {address}"
    first = f"source {activate}\n" if activate else ""
    return (
        f"{first}banditd select {experiment_id} alice{at}\n"
        f'id=$(banditd select {experiment_id} bob --quiet{at}) && banditd reward "$id" 1{at}\n'
    )


def python_snippet(address: str, experiment_id: str) -> str:
    """The same from Python, with the generated stubs."""
    return f"""import grpc
from banditd.v1 import decision_pb2 as pb, decision_pb2_grpc as rpc

stub = rpc.DecisionServiceStub(grpc.insecure_channel("{address}"))
d = stub.Select(pb.SelectRequest(experiment_id="{experiment_id}", user_id="alice"))
print(d.arm, d.policy, d.propensity, pb.ServedBy.Name(d.served_by))
print(stub.Reward(pb.RewardRequest(decision_id=d.decision_id, value=1.0)))
"""


def venv_activate_script() -> str | None:
    """This interpreter's virtual environment's ``bin/activate``, relative to the working
    directory when it lies below it (``.venv/bin/activate`` under ``make serve``)."""
    if sys.prefix == sys.base_prefix:
        return None
    prefix = Path(sys.prefix).resolve()
    for here in (Path(".venv"), Path("venv")):
        if here.resolve() == prefix:  # also when .venv is a link to it
            return str(here / "bin" / "activate")
    return str(prefix / "bin" / "activate")


def banner(address: str, experiment_id: str) -> str:
    """What ``banditd serve --create-demo`` prints once it is SERVING."""
    return (
        f"\nbanditd is serving experiment '{experiment_id}' on {address}. Try it "
        "in another terminal, from this directory:\n\n"
        f"{try_it(address, experiment_id, venv_activate_script())}\n"
        f"Then watch it learn: make demo   (or: banditctl demo)\n"
        f"Daily verdict:       banditctl decide {experiment_id}\n"
    )
