"""The lines every benchmark prints first: when, what was run, on what, and how busy the machine was (other jobs on a
shared machine skew a single run, so a figure without its load cannot be compared)."""

from __future__ import annotations

import os
import platform
import sys
import time


def print_header() -> None:
    print(f"date        {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"command     python {' '.join(sys.argv)}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine     {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"load average {load}")
