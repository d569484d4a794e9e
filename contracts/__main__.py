"""`python -m contracts [--publish] [--no-consumers]`: consumers, providers, the matrix.

Exit status 0 only when every interaction verifies and every derived boundary has a contract.
Each run records its verifications per consumer and provider version (contracts.deploy).

`python -m contracts can-i-deploy SERVICE --version SHA [--with NAME=SHA ...]`: may SERVICE
at SHA be deployed? Answered from the recorded matrix, or by the Pact Broker when
$PACT_BROKER_BASE_URL is set; exit status 1 when a verified pair is missing or failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import MATRIX_PATH
from .deploy import BrokerError, Results, broker_can_i_deploy, can_i_deploy, results_path
from .runner import CONSUMERS, render, run


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["can-i-deploy"]:
        return can_i_deploy_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m contracts", description=__doc__)
    parser.add_argument(
        "--publish",
        action="store_true",
        default=os.environ.get("PUBLISH") == "1",
        help="also publish the pacts and their verification results to $PACT_BROKER_BASE_URL",
    )
    parser.add_argument(
        "--no-consumers", action="store_true", help="verify the pact files as they are"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = run(
        consumers=None if args.no_consumers else CONSUMERS,
        publish_to_broker=args.publish,
        results=results_path(),
    )
    print(render(report))
    print(f"matrix: {MATRIX_PATH}, verifications: {results_path()} ", end="")
    print(f"({time.monotonic() - started:.1f} s)")
    return 0 if report.ok else 1


def can_i_deploy_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m contracts can-i-deploy",
        description="May SERVICE at --version be deployed? (exit 0: yes, 1: no, 2: cannot tell)",
    )
    parser.add_argument("service")
    parser.add_argument("--version", required=True, help="the service's version (git sha)")
    parser.add_argument(
        "--with",
        dest="partners",
        action="append",
        default=[],
        metavar="NAME=SHA",
        help="the version of a service it will meet (default: the latest one recorded)",
    )
    parser.add_argument(
        "--to-environment", help="with a broker: the environment to deploy to", default=None
    )
    args = parser.parse_args(argv)
    partners = dict(p.partition("=")[::2] for p in args.partners)
    base = os.environ.get("PACT_BROKER_BASE_URL")
    if base:
        try:
            answer = broker_can_i_deploy(
                base,
                args.service,
                args.version,
                args.to_environment,
                os.environ.get("PACT_BROKER_TOKEN"),
            )
        except BrokerError as exc:
            print(f"can-i-deploy: cannot tell: {exc}", file=sys.stderr)
            return 2
    else:
        answer = can_i_deploy(Results.load(results_path()), args.service, args.version, partners)
    print(answer.render())
    return 0 if answer.deployable else 1


if __name__ == "__main__":
    sys.exit(main())
