#!/usr/bin/env python
"""CMRC 2018 evaluation, as called by run_reading.sh: ``cmrc2018_evaluate.py DATA PRED [OUT]``.

Prints the official JSON line (AVERAGE, F1, EM, TOTAL, SKIP, FILE) and writes it to OUT when given.
The same as ``nezha evaluate-cmrc``; see docs/cmrc.md.
"""

import sys

from nezha.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate-cmrc", *sys.argv[1:]]))
