#!/usr/bin/python3 -IB
"""``helpline-agent-root`` as the .deb installs it: the root helper (:mod:`agent.rootfix`).

Installed as ``/usr/lib/helpline-agent/helpline-agent-root`` and started by
``helpline-agent-root@.service``, one per connection on ``helpline-agent-root.socket``.
It loads only the root-owned code in ``lib/`` beside it; ``-I`` keeps the environment and
user site out of the import path, ``-B`` writes no bytecode.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    here = os.path.dirname(os.path.realpath(__file__))
    sys.path.insert(0, os.path.join(here, "lib"))
    from agent.rootfix import main as helper

    raise SystemExit(helper(sys.argv[1:]))


if __name__ == "__main__":
    main()
