"""Start a test world by hand: ``python -m sealbox.testworld [--dir DIR]``.

Prints the world's description as JSON and instructions, then serves until
Ctrl-C or SIGTERM and stops every process.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from .world import TestWorld


def _instructions(world: TestWorld) -> str:
    ca = world.ca.cert_path
    return f"""
Try it (every server listens on 127.0.0.1 only):
  curl --cacert {ca} https://{world.https.addr}/bytes/16 | od -A d -t x1 | head -1
  curl --cacert {ca} --connect-to api.github.com:443:{world.https.addr} https://api.github.com/echo
  GIT_SSL_CAINFO={ca} git ls-remote {world.direct_git_url("small")}
  curl --cacert {ca} -u __token__:$TOKEN https://{world.pypi.addr}/simple/
The token is the one passed with --token (default: sealbox.testworld.DEFAULT_TOKEN).
Press Ctrl-C to stop.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sealbox.testworld", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="directory for the world's files (default: a new temporary directory)")
    parser.add_argument("--repo-cache", type=Path, help="cache directory of the large repository "
                        "(default: $SEALBOX_TESTWORLD_CACHE or ~/.cache/sealbox/testworld)")
    parser.add_argument("--token", help="token that the private repository and the package index require")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    directory = args.dir or Path(tempfile.mkdtemp(prefix="sealbox-testworld-"))
    options = {"token": args.token} if args.token else {}
    world = TestWorld(directory, repo_cache=args.repo_cache, **options)

    def request_stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Set both explicitly: a shell starting this in the background ignores SIGINT.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        world.start()
        print(json.dumps(world.describe(), indent=2))
        print(_instructions(world), flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        world.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
