"""The probe process: ``python -m exportnb.incident.probe_process FOLDER LOCK``.

The runner starts it for an incident notebook's run as soon as the run is planned
(:class:`~exportnb.incident.probes.ProbeProcess`). It opens the incident from the parameters
the runner left in FOLDER, starts the incident's probes, and hands each result over in
FOLDER as it arrives, for the run's kernel to collect (:mod:`exportnb.incident.probes`).
LOCK is the descriptor of FOLDER/alive, locked by the runner and held until this process
ends: a kernel waiting on a result stops waiting once it is released.

What it hands over is pickled by the classes' own module (:mod:`exportnb.incident.probes`,
the steps), never as ``__main__``, so that the kernel loads it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from exportnb.incident.model import open_incident
from exportnb.incident.parameters import PARAMETERS
from exportnb.incident.probes import (
    ENV,
    GIVEN,
    OPENED,
    EarlyProbes,
    Handed,
    Opened,
    hand_over,
    name_of,
)


def main(argv: list[str]) -> int:
    """Open the incident from FOLDER/given.json, start its probes, hand each result over."""
    folder, lock = Path(argv[0]), int(argv[1])
    os.environ.pop(ENV, None)  # this process opens the incident itself
    with os.fdopen(lock, "rb"):  # the lock is released when this process ends
        given = json.loads((folder / GIVEN).read_text(encoding="utf-8"))
        incident = open_incident(**given).start_probes()
        early = incident.probes
        assert isinstance(early, EarlyProbes)
        opened = Opened(
            {**PARAMETERS, **given},
            incident.now,
            incident.incident_start,
            incident.breach_found,
            tuple(early.started()),
        )
        hand_over(folder / OPENED, opened)
        for function, future in early.finished():
            hand_over(folder / f"{name_of(function)}.pickle", Handed.of(function, future))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
