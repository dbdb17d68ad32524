"""`infery ...` (installed as a console script) and `python -m infery_cli ...`."""

from __future__ import annotations

import argparse
import os
import sys

from .client import ClientError, add_client_commands
from .operator import OperatorError, add_operator_commands, run_operator_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infery", description="Transcribe with, and operate, an infery deployment.")
    parser.add_argument("--local", action="store_true", help="the local stack started by `make serve`")
    parser.add_argument(
        "--stack",
        default=os.environ.get("INFERY_STACK", "infery"),
        help="the CloudFormation stack to operate (default: $INFERY_STACK or 'infery')",
    )
    parser.add_argument(
        "--region", help="the AWS region of the stack (default: $AWS_DEFAULT_REGION or your AWS profile's region)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_client_commands(commands)
    add_operator_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "run_client"):
            args.run_client(args)
        else:
            run_operator_command(args)
    except (OperatorError, ClientError) as exc:
        print(f"infery: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
